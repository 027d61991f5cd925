// streams/: split streams stored as objects, named by a content identifier (e.g.
// oci-layer-sha256:…), with refs under streams/refs/.

import ComposeFSBase
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

extension Repository {
    /// Stores a finished split stream and names it streams/NAME (and streams/refs/REF). The
    /// objects it refers to must be stored already: everything is flushed before it is named.
    @discardableResult
    public func writeStream(_ bytes: [UInt8], name: String, ref: String? = nil) throws(RepositoryError) -> ObjectID {
        guard !name.isEmpty, !name.contains("/"), name != "refs", !name.hasPrefix(".") else { throw .invalidName(name) }
        let id = try ensureObject(bytes)
        try sync()
        try setSymlink("streams/" + name, to: "objects/" + id.objectPath)
        if let ref {
            try Self.checkRefName(ref)
            try setSymlink("streams/refs/" + ref, to: "streams/" + name)
        }
        return id
    }

    /// Reads streams/NAME (a content identifier, or refs/…).
    public func openStream(_ name: String) throws(RepositoryError) -> SplitStream {
        guard !name.isEmpty, !name.split(separator: "/").contains("..") else { throw .invalidName(name) }
        guard let bytes = try readFile("streams/" + name) else { throw .notFound("stream \(name)") }
        return try SplitStream(bytes, algorithm: algorithm)
    }

    /// Writes the original content of streams/NAME, its objects checked as they are opened.
    public func cat(_ name: String, to output: (UnsafeRawBufferPointer) throws(RepositoryError) -> Void) throws(RepositoryError) {
        try openStream(name).reassemble(openObject: { id throws(RepositoryError) in try openObject(id) }, output: output)
    }

    /// The object streams/NAME (or streams/refs/…) names; nil when there is no such stream.
    public func streamID(_ name: String) -> ObjectID? {
        guard !name.isEmpty, !name.split(separator: "/").contains("..") else { return nil }
        var info = stat()
        guard fstatat(directory.raw, "streams/" + name, &info, 0) == 0, var target = readLink(at: directory.raw, "streams/" + name)
        else { return nil }
        // A ref names a stream entry, which names the object.
        if name.hasPrefix("refs/") {
            guard let stream = target.split(separator: "/").last, let entry = readLink(at: directory.raw, "streams/" + stream) else {
                return nil
            }
            target = entry
        }
        return ObjectID(objectPath: target, algorithm: algorithm)
    }

    /// Points streams/refs/REF at streams/NAME.
    public func setStreamRef(_ ref: String, to name: String) throws(RepositoryError) {
        try Self.checkRefName(ref)
        try setSymlink("streams/refs/" + ref, to: "streams/" + name)
    }

    /// Removes streams/refs/REF.
    public func removeStreamRef(_ ref: String) throws(RepositoryError) {
        try Self.checkRefName(ref)
        guard unlinkat(directory.raw, "streams/refs/" + ref, 0) == 0 else {
            if errno == ENOENT { throw .notFound("ref \(ref)") }
            throw .system(SystemError("unlink", path: path + "/streams/refs/" + ref))
        }
    }

    /// The refs directly in streams/refs/DIRECTORY, with the stream name each points at, in
    /// directory order.
    public func streamRefs(in directoryName: String) throws(RepositoryError) -> [(ref: String, stream: String)] {
        var result: [(ref: String, stream: String)] = []
        for (name, type) in try list("streams/refs/" + directoryName) where type == DT_LNK && !name.hasPrefix(".symlink-") {
            guard let target = readLink(at: directory.raw, "streams/refs/\(directoryName)/\(name)"),
                let last = target.split(separator: "/").last
            else { continue }
            result.append((name, String(last)))
        }
        return result
    }

    /// The whole content of an object (checked against its digest where the kernel can).
    public func readObject(_ id: ObjectID) throws(RepositoryError) -> [UInt8] {
        let file = try openObject(id)
        return try systemCall { () throws(SystemError) in try file.readAll() }
    }
}
