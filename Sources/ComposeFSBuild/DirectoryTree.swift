// Building the composefs tree of a directory on disk, the one way mkcomposefs and the
// repository (cfsctl create-image, compute-id) both do it: scan the metadata, then digest,
// inline or store the content of every regular file.

import ComposeFS
import ComposeFSBase
import FsVerity
import SELinux

#if canImport(Glibc)
import Glibc
#endif

/// What building the tree of a directory can fail on.
public enum BuildError: Error, CustomStringConvertible {
    case scan(ScanError)
    case containerRoot(ContainerRootError)
    case content(ContentError)
    /// A bootable tree's SELinux policy could not be applied.
    case selinux(SELinuxError)

    public var description: String {
        switch self {
        case let .scan(error): error.description
        case let .containerRoot(error): error.description
        case let .content(error): "error computing digest: \(error)"
        case let .selinux(error): error.description
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
    /// Make it a bootable root as composefs-rs does (`ContainerRoot.prepareBoot`, then the
    /// SELinux labels of the tree's policy, or none when it has none).
    public var bootable: Bool
    /// Where a bootable tree's policy files are read.
    public var policyFiles: PolicyFiles

    /// composefs-rs reads the policy on disk when it computes an id (`compute-id`, no
    /// repository) and from the tree's files when it stores them (`create-image`): the two
    /// differ on symlinks and on what is not a regular file.
    public enum PolicyFiles: Sendable {
        case onDisk
        case inTree
    }

    public init(
        scan: ScanOptions = ScanOptions(), algorithm: FsVerityAlgorithm = .sha256, threads: Int,
        containerRoot: XattrFilter? = nil, bootable: Bool = false, policyFiles: PolicyFiles = .onDisk
    ) {
        self.scan = scan
        self.algorithm = algorithm
        self.threads = threads
        self.containerRoot = containerRoot
        self.bootable = bootable
        self.policyFiles = policyFiles
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
        // Hard links the labels split: copies whose content is their original's.
        var copies: [(original: Inode, copy: Inode)] = []
        if options.containerRoot != nil || options.bootable {
            do throws(ContainerRootError) {
                if let filter = options.containerRoot { try ContainerRoot.prepare(scanned.root, xattrs: filter) }
                if options.bootable { try ContainerRoot.prepareBoot(scanned.root) }
            } catch {
                throw .containerRoot(error)
            }
            if options.bootable {
                do throws(SELinuxError) {
                    copies = try SELinuxLabels.apply(to: scanned.root, policy: policySource(directory, options.policyFiles, files)).copies
                } catch {
                    throw .selinux(error)
                }
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
        for (original, copy) in copies {
            copy.digest = original.digest
            copy.payload = original.payload
            copy.content = original.content
        }
        return scanned.root
    }

    /// Where the policy is read: the directory, or its scanned files as the tree has them.
    private static func policySource(_ directory: String, _ lookup: BuildOptions.PolicyFiles, _ files: [ScannedFile]) -> PolicySource {
        switch lookup {
        case .onDisk:
            return .directory(directory)
        case .inTree:
            return .tree { (inode) throws(PolicyReadError) in
                guard let file = files.first(where: { $0.inode === inode }) else {
                    throw PolicyReadError("a policy file of the tree is not among the files scanned")
                }
                let raw = (file.path + [0]).withUnsafeBufferPointer { name in
                    name.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
                }
                let shown = displayBytes(file.path)
                guard raw >= 0 else { throw PolicyReadError(SystemError("open", path: shown).description) }
                do throws(SystemError) { return try FileDescriptor(owning: raw, path: shown).readAll() } catch {
                    throw PolicyReadError(error.description)
                }
            }
        }
    }
}
