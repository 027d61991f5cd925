// Images: composefs EROFS images stored as objects and listed under images/ (only those may
// be mounted), built from directories the way mkcomposefs builds them, so an image id computed
// at build time equals `mkcomposefs --print-digest-only` of the same tree (SHA-256 repositories).

import CComposeFSSys
import ComposeFS
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

/// Builds images of directory trees with mkcomposefs's rules.
public enum TreeImage {
    /// The tree of `directory`, its files' digests computed with `algorithm`, each file over the
    /// inline limit copied into `store` when one is given.
    public static func build(
        directory: String, algorithm: FsVerityAlgorithm, threads: Int, store: (any ObjectStore)?,
        cache: (any DigestCache)? = nil, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(RepositoryError) -> [UInt8] {
        do {
            let scanned = try DirectoryScanner.scan(path: Array(directory.utf8), options: ScanOptions())
            try ContentProcessor.process(
                files: scanned.files, threads: threads, algorithm: algorithm, store: store, cache: cache,
                progress: progress)
            return try ImageWriter.image(root: scanned.root)
        } catch let error as RepositoryError {
            throw error
        } catch {
            throw .corrupt(path: directory, reason: "\(error)")
        }
    }

    /// The image id of a directory without storing anything (`cfsctl compute-id`).
    public static func computeID(directory: String, algorithm: FsVerityAlgorithm, threads: Int) throws(RepositoryError) -> [UInt8] {
        FsVerity.digest(of: try build(directory: directory, algorithm: algorithm, threads: threads, store: nil), algorithm: algorithm)
    }
}

extension Repository {
    /// Stores every file of `directory` and its image; returns the image id. With `name`, the
    /// image also gets the ref images/refs/NAME.
    public func createImage(
        from directory: String, name: String?, threads: Int,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(RepositoryError) -> [UInt8] {
        let objects = try objectsDirectory()
        defer { close(objects) }
        let store = RepositoryObjectStore(repository: self, objects: objects)
        // Digests of files unchanged since an earlier import come from the cache, unread.
        let cache = FileDigestCache(repository: self)
        let image = try TreeImage.build(
            directory: directory, algorithm: algorithm, threads: threads, store: store, cache: cache, progress: progress)
        let id = try writeImage(image, name: name)
        // Only a shortcut for next time: failing to save it does not fail the import.
        try? cache.save(in: self)
        return id
    }

    /// Stores an image and lists it under images/ (and images/refs/NAME). Everything is flushed
    /// to disk first, so a listed image never refers to objects a crash could lose.
    @discardableResult
    public func writeImage(_ image: [UInt8], name: String?) throws(RepositoryError) -> [UInt8] {
        let id = try ensureObject(image)
        try sync()
        let hex = Hex.encode(id)
        try setSymlink("images/" + hex, to: "objects/" + objectPath(id))
        if let name {
            try Self.checkRefName(name)
            try setSymlink("images/refs/" + name, to: "images/" + hex)
        }
        return id
    }

    /// How an image was named when opened.
    public struct OpenedImage {
        public let fd: Int32
        public let id: [UInt8]?
        /// Whether the kernel vouched for the image's digest (so mounts can require verity).
        public let verified: Bool
    }

    /// Opens `images/NAME`, where NAME is a digest (checked against the kernel's measurement)
    /// or `refs/…` (trusted as named).
    public func openImage(_ name: String) throws(RepositoryError) -> OpenedImage {
        let isRef = name.hasPrefix("refs/")
        let id = isRef ? nil : Hex.decode(name)
        guard isRef || id?.count == algorithm.digestSize else { throw .invalidName(name) }
        let fd = openat(directory, "images/" + name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw .notFound("image \(name)") }
            throw .system(operation: "open", path: path + "/images/" + name, code: errno)
        }
        guard let id else { return OpenedImage(fd: fd, id: nil, verified: true) }
        let measured: [UInt8]
        do throws(FsVerityError) {
            measured = try FsVerity.measure(fileDescriptor: fd).digest
        } catch {
            let unavailable = error == .notEnabled || error == .notSupported
            guard unavailable && !isSecure else {
                close(fd)
                throw .verityMissing(path: "images/" + name)
            }
            // An insecure repository: nothing vouches for the image, so mounts go without verity.
            return OpenedImage(fd: fd, id: id, verified: false)
        }
        guard measured == id else {
            close(fd)
            throw .digestMismatch(path: "images/" + name, expected: name, actual: Hex.encode(measured))
        }
        return OpenedImage(fd: fd, id: id, verified: true)
    }

    /// The objects an image refers to (its backing files), as digests.
    public func imageObjects(_ name: String) throws(RepositoryError) -> [[UInt8]] {
        let image = try openImage(name)
        defer { close(image.fd) }
        return try referencedObjects(imageFD: image.fd, path: "images/" + name)
    }

    func referencedObjects(imageFD: Int32, path name: String) throws(RepositoryError) -> [[UInt8]] {
        let root: Inode
        do { root = try ImageReader.read(path: "/proc/self/fd/\(imageFD)") } catch {
            throw .corrupt(path: name, reason: "\(error)")
        }
        var seen = Set<[UInt8]>()
        var result: [[UInt8]] = []
        var pending = [root]
        while let inode = pending.popLast() {
            for entry in inode.entries where !entry.isHardlink { pending.append(entry.inode) }
            guard inode.isRegular, inode.content == nil, let payload = inode.payload,
                let id = objectID(fromPath: String(decoding: payload, as: UTF8.self))
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
    let objects: Int32

    func add(sourceFD: Int32, objectPath: [UInt8]) throws(SystemError) {
        let text = String(decoding: objectPath, as: UTF8.self)
        var info = stat()
        guard fstat(sourceFD, &info) == 0 else { throw SystemError("stat", path: text) }
        guard let id = repository.objectID(fromPath: text) else { throw SystemError("store", path: text, code: EINVAL) }
        do throws(RepositoryError) {
            try repository.ensureObject(copying: sourceFD, id: id, size: Int(info.st_size), objects: objects)
        } catch let .system(operation, path, code) {
            throw SystemError(operation, path: path, code: code)
        } catch {
            throw SystemError("\(error)", path: text, code: EIO)
        }
    }
}
