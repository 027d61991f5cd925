// Building the composefs tree of a directory on disk, the one way mkcomposefs and the
// repository (cfsctl create-image, compute-id) both do it: scan the metadata, then digest,
// inline or store the content of every regular file.

import ComposeFS
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

/// What building the tree of a directory can fail on.
public enum BuildError: Error, CustomStringConvertible {
    case scan(ScanError)
    case containerRoot(ContainerRootError)
    case content(ContentError)
    /// Something the tree asks for that is not implemented (SELinux labels from a policy).
    case unsupported(String)

    public var description: String {
        switch self {
        case let .scan(error): error.description
        case let .containerRoot(error): error.description
        case let .content(error): "error computing digest: \(error)"
        case let .unsupported(message): message
        }
    }
}

public struct BuildOptions: Sendable {
    public var scan: ScanOptions
    /// The fs-verity algorithm naming the files' objects.
    public var algorithm: FsVerityAlgorithm
    /// Threads digesting and copying files.
    public var threads: Int
    /// Make the tree a container root as composefs-rs does (`ContainerRoot.prepare`) with this
    /// xattr filter; nil keeps the tree as it is.
    public var containerRoot: XattrFilter?
    /// Make it a bootable root as composefs-rs does (`ContainerRoot.prepareBoot`, and no
    /// SELinux labels unless the tree has a policy).
    public var bootable: Bool

    public init(
        scan: ScanOptions = ScanOptions(), algorithm: FsVerityAlgorithm = .sha256, threads: Int,
        containerRoot: XattrFilter? = nil, bootable: Bool = false
    ) {
        self.scan = scan
        self.algorithm = algorithm
        self.threads = threads
        self.containerRoot = containerRoot
        self.bootable = bootable
    }
}

public enum DirectoryTree {
    /// The tree of `directory`: files of at most `Limits.recommendedInlineContentMax` bytes
    /// inlined, the others named by their digest and handed to `store` when one is given.
    /// Digests of files `cache` knows unchanged are not computed again; `progress` hears
    /// (files done, files in all) from the worker threads.
    public static func build(
        directory: String, options: BuildOptions, store: (any ObjectStore)? = nil, cache: (any DigestCache)? = nil,
        progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(BuildError) -> Inode {
        let scanned: (root: Inode, files: [ScannedFile])
        do throws(ScanError) {
            scanned = try DirectoryScanner.scan(path: Array(directory.utf8), options: options.scan)
        } catch {
            throw .scan(error)
        }
        var files = scanned.files
        if options.containerRoot != nil || options.bootable {
            do throws(ContainerRootError) {
                if let filter = options.containerRoot { try ContainerRoot.prepare(scanned.root, xattrs: filter) }
                if options.bootable { try ContainerRoot.prepareBoot(scanned.root) }
            } catch {
                throw .containerRoot(error)
            }
            if options.bootable {
                var policy = stat()
                guard stat(directory + "/etc/selinux", &policy) != 0 && errno == ENOENT else {
                    throw .unsupported(
                        "\(directory)/etc/selinux: labelling a bootable image from an SELinux policy is not supported yet")
                }
                ContainerRoot.forEachInode(scanned.root) { $0.filterXattrs { $0 != ContainerRoot.selinuxXattr } }
            }
            // Files the transforms removed (under /run, /boot, /sysroot) need no content.
            var remaining = Set<ObjectIdentifier>()
            ContainerRoot.forEachInode(scanned.root) { remaining.insert(ObjectIdentifier($0)) }
            files.removeAll { !remaining.contains(ObjectIdentifier($0.inode)) }
        }
        if options.scan.keepHardlinks { ContainerRoot.countLinks(scanned.root) }
        do throws(ContentError) {
            try ContentProcessor.process(
                files: files, threads: options.threads, algorithm: options.algorithm, store: store, cache: cache,
                progress: progress)
        } catch {
            throw .content(error)
        }
        return scanned.root
    }
}
