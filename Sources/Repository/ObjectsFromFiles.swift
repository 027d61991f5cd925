// Objects made from open files, as composefs-rs 0.9's ensure_object_from_file makes them for
// layers that arrive as files (varlink's PutLayer, `cfsctl oci copy`): a reflink of the file
// where the file systems allow it, else a hard link to the file itself, else, unless only
// zero-copy ways are allowed, a copy. Whatever way is taken, the object's digest is computed
// from the bytes that end up stored (the reflink or the copy, not the source, which its owner
// may still change), and the caller sees those bytes once.

import CComposeFSSys
import ComposeFSBase
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

/// How an object came to be in the repository (composefs-rs's ObjectStoreMethod).
public enum ObjectStoreMethod: Sendable, Equatable {
    case reflinked, hardlinked, copied, alreadyPresent
}

/// What one import learns as it goes: the pairs of file systems between which reflinks fail,
/// so that later objects skip the attempt (composefs-rs's ImportContext).
public struct ImportContext: Sendable {
    struct DevicePair: Hashable, Sendable {
        var source: UInt64
        var destination: UInt64
    }

    var withoutReflinks: Set<DevicePair> = []

    public init() {}
}

/// Sees the content of each object stored from a file, once (the OCI layer's diff_id hash).
/// A value: a way that fails after reading leaves the caller's copy untouched.
public protocol ContentInspector {
    mutating func update(_ bytes: UnsafeRawBufferPointer)
}

extension Repository {
    /// Stores the `size` bytes of the regular file `source` as an object: reflinked, else
    /// hard-linked (fs-verity enabled on the file itself, where the file system has it), else
    /// copied when `allowCopy`. Returns the object, the way it was stored, and `inspector`
    /// after it has seen the object's bytes.
    public func storeObject<Inspector: ContentInspector>(
        file source: FileDescriptor, size: UInt64, allowCopy: Bool, context: inout ImportContext, inspector: Inspector
    ) throws(RepositoryError) -> (id: ObjectID, method: ObjectStoreMethod, inspector: Inspector) {
        let objects = try objectsDirectory()
        let devices = ImportContext.DevicePair(
            source: UInt64(try systemCall { () throws(SystemError) in try source.status() }.st_dev),
            destination: UInt64(try systemCall { () throws(SystemError) in try objects.status() }.st_dev))
        var reflinkFailure = "not supported between these file systems"
        if !context.withoutReflinks.contains(devices) {
            let file = try UnnamedFile(in: objects, mode: 0o644)
            let result = cfs_ficlone(file.fd.raw, source.raw)
            if result == 0 {
                let cloned = try systemCall { () throws(SystemError) in try file.fd.status() }.st_size
                guard UInt64(cloned) == size else {
                    throw .corrupt(path: source.path, reason: "reflink size mismatch: expected \(size), got \(cloned)")
                }
                var inspected = inspector
                let id = try digest(of: file.fd, size: size, inspector: &inspected, copyingTo: nil)
                return (id, try name(file, id: id, size: size, objects: objects, method: .reflinked), inspected)
            }
            // Only "these file systems cannot" moves on; any other failure is one.
            guard -result == EOPNOTSUPP || -result == EXDEV else {
                throw .system(SystemError("reflink", path: source.path, code: -result))
            }
            context.withoutReflinks.insert(devices)
            reflinkFailure = SystemError.message(-result)
        }
        do {
            return try hardLink(source, size: size, objects: objects, inspector: inspector)
        } catch {
            guard allowCopy else { throw .zeroCopyImpossible(path: source.path, reflink: reflinkFailure, hardLink: error.description) }
        }
        let file = try UnnamedFile(in: objects, mode: 0o644)
        var inspected = inspector
        let id = try digest(of: source, size: size, inspector: &inspected, copyingTo: file.fd)
        return (id, try name(file, id: id, size: size, objects: objects, method: .copied), inspected)
    }

    /// Links `source` itself in as the object, after enabling fs-verity on it (required in a
    /// secure repository; the kernel's digest must then be the one computed).
    private func hardLink<Inspector: ContentInspector>(
        _ source: FileDescriptor, size: UInt64, objects: FileDescriptor, inspector: Inspector
    ) throws(RepositoryError) -> (id: ObjectID, method: ObjectStoreMethod, inspector: Inspector) {
        var measured: ObjectID?
        do throws(FsVerityError) {
            do { try FsVerity.enable(fileDescriptor: source.raw, algorithm: algorithm) } catch .alreadyEnabled {}
            measured = try FsVerity.measure(fileDescriptor: source.raw)
        } catch .notSupported where !isSecure {
            // An insecure repository on a file system without fs-verity.
        } catch {
            throw .verity(path: source.path, error)
        }
        var inspected = inspector
        let id = try digest(of: source, size: size, inspector: &inspected, copyingTo: nil)
        if let measured, measured != id { throw .digestMismatch(path: source.path, expected: id, actual: measured) }
        if try existingObjectMatches(objects, id: id, size: Int(size)) { return (id, .alreadyPresent, inspected) }
        let name = id.objectPath
        try makeDirectory(at: objects, String(name.prefix(2)), path: "objects/" + name.prefix(2))
        do throws(SystemError) {
            try source.linkUnnamed(as: name, in: objects)
        } catch where error.code == EEXIST {
            return (id, .alreadyPresent, inspected)
        } catch {
            throw .system(error)
        }
        return (id, .hardlinked, inspected)
    }

    /// Names `file` as object `id` unless an object of that digest and size exists already.
    private func name(
        _ file: UnnamedFile, id: ObjectID, size: UInt64, objects: FileDescriptor, method: ObjectStoreMethod
    ) throws(RepositoryError) -> ObjectStoreMethod {
        if try existingObjectMatches(objects, id: id, size: Int(size)) { return .alreadyPresent }
        try finish(file, id: id, objects: objects)
        return method
    }

    /// The fs-verity digest of the first `size` bytes of `file` (which must have them), shown
    /// to `inspector` and written to `copy` when given.
    private func digest<Inspector: ContentInspector>(
        of file: FileDescriptor, size: UInt64, inspector: inout Inspector, copyingTo copy: FileDescriptor?
    ) throws(RepositoryError) -> ObjectID {
        var hasher = FsVerityHasher(algorithm: algorithm)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < size {
            let want = Int(min(UInt64(buffer.count), size - offset))
            let window = UnsafeMutableRawBufferPointer(rebasing: buffer[..<want])
            let count = try systemCall { () throws(SystemError) in try preadAll(file.raw, into: window, at: offset, path: file.path) }
            guard count == want else {
                throw .corrupt(path: file.path, reason: "shorter than the \(size) bytes declared (\(offset + UInt64(count)))")
            }
            let bytes = UnsafeRawBufferPointer(window)
            hasher.update(bytes)
            inspector.update(bytes)
            if let copy { try systemCall { () throws(SystemError) in try copy.write(bytes) } }
            offset += UInt64(count)
        }
        return hasher.finalize()
    }
}
