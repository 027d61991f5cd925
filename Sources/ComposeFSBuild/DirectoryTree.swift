// Building the composefs tree of a directory on disk, the one way mkcomposefs and the
// repository (cfsctl create-image, compute-id) both do it: scan the metadata, then digest,
// inline or store the content of every regular file.

import ComposeFS
import FsVerity

/// What building the tree of a directory can fail on.
public enum BuildError: Error, CustomStringConvertible {
    case scan(ScanError)
    case content(ContentError)

    public var description: String {
        switch self {
        case let .scan(error): error.description
        case let .content(error): "error computing digest: \(error)"
        }
    }
}

public struct BuildOptions: Sendable {
    public var scan: ScanOptions
    /// The fs-verity algorithm naming the files' objects.
    public var algorithm: FsVerityAlgorithm
    /// Threads digesting and copying files.
    public var threads: Int

    public init(scan: ScanOptions = ScanOptions(), algorithm: FsVerityAlgorithm = .sha256, threads: Int) {
        self.scan = scan
        self.algorithm = algorithm
        self.threads = threads
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
        do throws(ContentError) {
            try ContentProcessor.process(
                files: scanned.files, threads: options.threads, algorithm: options.algorithm, store: store, cache: cache,
                progress: progress)
        } catch {
            throw .content(error)
        }
        return scanned.root
    }
}
