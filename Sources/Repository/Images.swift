// Images: composefs EROFS images stored as objects and listed under images/ (only those may
// be mounted), built from directories the way composefs-rs 0.9 builds them, so an image id
// computed here equals the one its `cfsctl` computes for the same tree and options.

import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

/// How a directory becomes an image's tree (composefs-rs's `cfsctl` tree options).
public struct DirectoryImageOptions: Sendable {
    /// The container-root transform (the root takes /usr's metadata, /run is emptied, only
    /// these xattrs stay); nil keeps the tree as it is (`--no-propagate-usr-to-root`).
    public var containerRoot: XattrFilter?
    /// The boot transform (/boot and /sysroot emptied, SELinux labels applied or stripped).
    public var bootable: Bool

    public init(containerRoot: XattrFilter? = .allowlistOnly, bootable: Bool = false) {
        self.containerRoot = containerRoot
        self.bootable = bootable
    }
}

extension Repository {
    /// The tree of `directory` as composefs-rs reads it: hard links kept, each file's digest
    /// computed with `algorithm`, each file over the inline limit handed to `store` when one
    /// is given. As there, a bootable tree's SELinux policy is read on disk without a store
    /// (`compute-id`) and from the tree's files with one (`create-image`).
    public static func tree(
        of directory: String, algorithm: FsVerityAlgorithm, options: DirectoryImageOptions, threads: Int,
        store: (any ObjectStore)? = nil, cache: (any DigestCache)? = nil,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(RepositoryError) -> Inode {
        let build = BuildOptions(
            scan: ScanOptions(keepHardlinks: true), algorithm: algorithm, threads: threads, containerRoot: options.containerRoot,
            bootable: options.bootable, policyFiles: store == nil ? .onDisk : .inTree)
        do throws(BuildError) {
            return try DirectoryTree.build(directory: directory, options: build, store: store, cache: cache, progress: progress)
        } catch {
            throw .build(error)
        }
    }

    /// The image of a tree in `format`, after the checks composefs-rs makes before writing one.
    public static func image(of root: Inode, format: FormatVersion) throws(RepositoryError) -> [UInt8] {
        var whiteoutLinked = false
        ContainerRoot.forEachInode(root) { if $0.isWhiteout && $0.nlink > 1 { whiteoutLinked = true } }
        if whiteoutLinked { throw .invalidFilesystem("whiteout inode has nlink > 1") }
        do { return try ImageWriter.image(root: root, options: ImageOptions(format: format)) } catch { throw .imageWrite(error) }
    }

    /// The image id of a directory without storing anything (`cfsctl compute-id`).
    public static func computeID(
        directory: String, algorithm: FsVerityAlgorithm, format: FormatVersion, options: DirectoryImageOptions, threads: Int
    ) throws(RepositoryError) -> ObjectID {
        let root = try tree(of: directory, algorithm: algorithm, options: options, threads: threads)
        return FsVerity.digest(of: try image(of: root, format: format), algorithm: algorithm)
    }

    /// Stores every file of `directory` and its images; returns the id of the image in the
    /// default format. With `name`, that image also gets the ref images/refs/NAME.
    public func createImage(
        from directory: String, name: String?, options: DirectoryImageOptions, threads: Int,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(RepositoryError) -> ObjectID {
        let store = RepositoryObjectStore(repository: self, objects: try objectsDirectory())
        // Digests of files unchanged since an earlier import come from the cache, unread.
        let cache = FileDigestCache(repository: self)
        let root = try Self.tree(
            of: directory, algorithm: algorithm, options: options, threads: threads, store: store, cache: cache, progress: progress)
        let id = try commitImages(root: root, name: name)
        // Only a shortcut for next time: failing to save it does not fail the import.
        try? cache.save(in: self)
        return id
    }

    /// Writes the image of `root` in every format the repository keeps (`imageFormats`);
    /// returns the id of the default one, which alone gets `name`.
    public func commitImages(root: Inode, name: String?) throws(RepositoryError) -> ObjectID {
        var defaultID: ObjectID?
        for format in imageFormats {
            let id = try writeImage(try Self.image(of: root, format: format), name: defaultID == nil ? name : nil)
            if defaultID == nil { defaultID = id }
        }
        guard let defaultID else { throw .unsupported("the repository names no image format") }
        return defaultID
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

    /// The refs under images/refs/ (recursively, names joined with '/') and the last component
    /// of what each points at, in the order the file system lists them, as composefs-rs's
    /// `cfsctl images` shows them. Links to nowhere are listed too.
    public func imageRefs() throws(RepositoryError) -> [(name: String, digest: String)] {
        var refs: [(name: String, digest: String)] = []
        func visit(_ relative: String, _ prefix: String) throws(RepositoryError) {
            for (name, type) in try Self.list(directory, relative, path: path, sorted: false) {
                if type == DT_DIR {
                    try visit(relative + "/" + name, prefix + name + "/")
                } else if let target = readLink(at: directory.raw, relative + "/" + name) {
                    refs.append((prefix + name, String(target.split(separator: "/").last ?? "")))
                }
            }
        }
        try visit("images/refs", "")
        return refs
    }

    /// An image opened by name.
    public struct OpenedImage {
        public let file: FileDescriptor
        public let id: ObjectID?
        /// Whether the kernel vouched for the image's digest (so mounts can require verity).
        public let verified: Bool
    }

    /// Opens an image by name, as composefs-rs resolves it: `images/NAME`, else for a NAME
    /// without '/' the ref `images/refs/NAME`. A NAME without '/' found in images/ is a digest,
    /// checked against the kernel's measurement; refs are trusted as named.
    public func openImage(_ name: String) throws(RepositoryError) -> OpenedImage {
        func open(_ relative: String) throws(RepositoryError) -> FileDescriptor? {
            let fd = openat(directory.raw, relative, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                if errno == ENOENT { return nil }
                throw .system(SystemError("open", path: path + "/" + relative))
            }
            return FileDescriptor(owning: fd, path: path + "/" + relative)
        }
        guard !name.isEmpty, !name.split(separator: "/").contains("..") else { throw .invalidName(name) }
        guard let file = try open("images/" + name) else {
            if !name.contains("/"), let file = try open("images/refs/" + name) {
                return OpenedImage(file: file, id: nil, verified: true)
            }
            throw .imageNotFound(name)
        }
        if name.contains("/") { return OpenedImage(file: file, id: nil, verified: true) }
        guard let id = ObjectID(hex: name, algorithm: algorithm) else { throw .invalidName(name) }
        let measured: ObjectID
        do throws(FsVerityError) {
            measured = try FsVerity.measure(fileDescriptor: file.raw)
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
