// Images: composefs EROFS images stored as objects and listed under images/ (only those may
// be mounted), built from directories the way mkcomposefs builds them, so an image id computed
// at build time equals `mkcomposefs --print-digest-only` of the same tree (SHA-256 repositories).

import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

extension Repository {
    /// The image of `directory` as mkcomposefs builds it, its files' digests computed with
    /// `algorithm`, each file over the inline limit handed to `store` when one is given.
    public static func image(
        of directory: String, algorithm: FsVerityAlgorithm, threads: Int, store: (any ObjectStore)? = nil,
        cache: (any DigestCache)? = nil, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(RepositoryError) -> [UInt8] {
        let root: Inode
        do throws(BuildError) {
            root = try DirectoryTree.build(
                directory: directory, options: BuildOptions(algorithm: algorithm, threads: threads), store: store,
                cache: cache, progress: progress)
        } catch {
            throw .build(error)
        }
        do { return try ImageWriter.image(root: root) } catch { throw .imageWrite(error) }
    }

    /// The image id of a directory without storing anything (`cfsctl compute-id`).
    public static func computeID(directory: String, algorithm: FsVerityAlgorithm, threads: Int) throws(RepositoryError) -> ObjectID {
        FsVerity.digest(of: try image(of: directory, algorithm: algorithm, threads: threads), algorithm: algorithm)
    }

    /// Stores every file of `directory` and its image; returns the image id. With `name`, the
    /// image also gets the ref images/refs/NAME.
    public func createImage(
        from directory: String, name: String?, threads: Int,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(RepositoryError) -> ObjectID {
        let store = RepositoryObjectStore(repository: self, objects: try objectsDirectory())
        // Digests of files unchanged since an earlier import come from the cache, unread.
        let cache = FileDigestCache(repository: self)
        let image = try Self.image(
            of: directory, algorithm: algorithm, threads: threads, store: store, cache: cache, progress: progress)
        let id = try writeImage(image, name: name)
        // Only a shortcut for next time: failing to save it does not fail the import.
        try? cache.save(in: self)
        return id
    }

    /// Stores an image and lists it under images/ (and images/refs/NAME). Everything is flushed
    /// to disk first, so a listed image never refers to objects a crash could lose.
    @discardableResult
    public func writeImage(_ image: [UInt8], name: String?) throws(RepositoryError) -> ObjectID {
        let id = try ensureObject(image)
        try sync()
        try setSymlink("images/" + id.hex, to: "objects/" + id.objectPath)
        if let name {
            try Self.checkRefName(name)
            try setSymlink("images/refs/" + name, to: "images/" + id.hex)
        }
        return id
    }

    /// An image opened by name.
    public struct OpenedImage {
        public let file: FileDescriptor
        public let id: ObjectID?
        /// Whether the kernel vouched for the image's digest (so mounts can require verity).
        public let verified: Bool
    }

    /// Opens `images/NAME`, where NAME is a digest (checked against the kernel's measurement)
    /// or `refs/…` (trusted as named).
    public func openImage(_ name: String) throws(RepositoryError) -> OpenedImage {
        let isRef = name.hasPrefix("refs/")
        let id = isRef ? nil : ObjectID(hex: name, algorithm: algorithm)
        guard isRef || id != nil else { throw .invalidName(name) }
        let fd = openat(directory.raw, "images/" + name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw .notFound("image \(name)") }
            throw .system(SystemError("open", path: path + "/images/" + name))
        }
        let file = FileDescriptor(owning: fd, path: path + "/images/" + name)
        guard let id else { return OpenedImage(file: file, id: nil, verified: true) }
        let measured: ObjectID
        do throws(FsVerityError) {
            measured = try FsVerity.measure(fileDescriptor: fd)
        } catch {
            guard (error == .notEnabled || error == .notSupported) && !isSecure else { throw .verityMissing(path: "images/" + name) }
            // An insecure repository: nothing vouches for the image, so mounts go without verity.
            return OpenedImage(file: file, id: id, verified: false)
        }
        guard measured == id else { throw .digestMismatch(path: "images/" + name, expected: id, actual: measured) }
        return OpenedImage(file: file, id: id, verified: true)
    }

    /// The tree of `images/NAME`.
    public func readImage(_ name: String) throws(RepositoryError) -> Inode {
        try readImage(try openImage(name).file, path: "images/" + name)
    }

    /// The objects an image refers to (its backing files).
    public func imageObjects(_ name: String) throws(RepositoryError) -> [ObjectID] {
        try referencedObjects(try readImage(name))
    }

    func readImage(_ file: FileDescriptor, path name: String) throws(RepositoryError) -> Inode {
        let image = try systemCall { () throws(SystemError) in try MappedFile(path: name, fd: file.raw) }
        do { return try ImageReader.read(image.bytes) } catch { throw .badImage(path: name, error) }
    }

    /// The backing objects of a tree's regular files, each once, in tree order.
    func referencedObjects(_ root: Inode) -> [ObjectID] {
        var seen = Set<ObjectID>()
        var result: [ObjectID] = []
        var pending = [root]
        while let inode = pending.popLast() {
            for entry in inode.entries where !entry.isHardlink { pending.append(entry.inode) }
            guard inode.isRegular, inode.content == nil, let payload = inode.payload,
                let id = ObjectID(objectPath: String(decoding: payload, as: UTF8.self), algorithm: algorithm)
            else { continue }
            if seen.insert(id).inserted { result.append(id) }
        }
        return result
    }

    /// Ref names are paths below refs/: no empty, "." or ".." components.
    static func checkRefName(_ name: String) throws(RepositoryError) {
        let components = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !components.isEmpty, !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            throw .invalidName(name)
        }
    }
}

/// Puts the content pass's files into a repository's objects/.
struct RepositoryObjectStore: ObjectStore, @unchecked Sendable {
    let repository: Repository
    let objects: FileDescriptor

    func add(source: Int32, id: ObjectID, size: UInt64) throws {
        try repository.ensureObject(copying: source, id: id, size: size, objects: objects)
    }
}
