// streams/: split streams stored as objects, named by a content identifier (e.g.
// oci-layer-sha256:…), with refs under streams/refs/.

import FsVerity

#if canImport(Glibc)
import Glibc
#endif

extension Repository {
    /// Stores a finished split stream and names it streams/NAME (and streams/refs/REF). The
    /// objects it refers to must be stored already: everything is flushed before it is named.
    @discardableResult
    public func writeStream(_ bytes: [UInt8], name: String, ref: String? = nil) throws(RepositoryError) -> [UInt8] {
        guard !name.isEmpty, !name.contains("/"), name != "refs", !name.hasPrefix(".") else { throw .invalidName(name) }
        let id = try ensureObject(bytes)
        try sync()
        try setSymlink("streams/" + name, to: "objects/" + objectPath(id))
        if let ref {
            try Self.checkRefName(ref)
            try setSymlink("streams/refs/" + ref, to: "streams/" + name)
        }
        return id
    }

    /// Reads streams/NAME (a content identifier, or refs/…).
    public func openStream(_ name: String) throws(RepositoryError) -> SplitStream {
        guard !name.isEmpty, !name.split(separator: "/").contains("..") else { throw .invalidName(name) }
        guard let bytes = try readFile(at: directory, "streams/" + name) else { throw .notFound("stream \(name)") }
        return try SplitStream(bytes, algorithm: algorithm)
    }

    /// Writes the original content of streams/NAME, its objects checked as they are opened.
    public func cat(_ name: String, to output: (UnsafeRawBufferPointer) throws(RepositoryError) -> Void) throws(RepositoryError) {
        try openStream(name).reassemble(openObject: { id throws(RepositoryError) in try openObject(id) }, output: output)
    }
}
