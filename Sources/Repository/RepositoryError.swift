import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import EROFS
import FsVerity

public enum RepositoryError: Error, CustomStringConvertible {
    case invalidAlgorithm(String)
    case invalidMetadata(String)
    /// The repository needs something this implementation does not have.
    case unsupported(String)
    case notInitialized(path: String)
    /// `init` of a repository whose meta.json says something else.
    case alreadyInitialized(path: String, existing: RepositoryMetadata, requested: RepositoryMetadata)
    /// A repository of another digest algorithm than the one asked for.
    case algorithmMismatch(path: String, found: RepositoryAlgorithm, expected: RepositoryAlgorithm)
    /// A repository from before meta.json whose objects/ is empty: nothing tells its algorithm.
    case noObjectsToInferFrom(path: String)
    /// A name that cannot name an entry: a bad ref path, an image name that is not a digest.
    case invalidName(String)
    case notFound(String)
    /// No images/NAME, nor images/refs/NAME for a NAME without '/'.
    case imageNotFound(String)
    /// A tree composefs cannot represent (composefs-rs's `ValidatedFileSystem` checks).
    case invalidFilesystem(String)
    /// The kernel's fs-verity digest of a file is not the one its name promises.
    case digestMismatch(path: String, expected: ObjectID, actual: ObjectID)
    /// A secure repository holds a file without fs-verity.
    case verityMissing(path: String)
    /// fs-verity could not be enabled on or measured of a file.
    case verity(path: String, FsVerityError)
    /// A stored image that does not read back.
    case badImage(path: String, ImageFormatError)
    /// A tree that cannot be written as an image (a file too big, too many xattrs, …).
    case imageWrite(ImageWriteError)
    case corrupt(path: String, reason: String)
    /// Zero-copy storing of a file as an object: neither a reflink nor a hard link worked.
    case zeroCopyImpossible(path: String, reflink: String, hardLink: String)
    /// Building the tree of a directory failed (a file could not be read, …).
    case build(BuildError)
    case system(SystemError)

    public var description: String {
        switch self {
        case let .invalidAlgorithm(message), let .invalidMetadata(message), let .unsupported(message):
            message
        case let .notInitialized(path):
            "meta.json not found in \(path); this repository must be initialized with `cfsctl init`"
        case let .alreadyInitialized(_, existing, requested):
            "repository already initialized with different configuration (\(existing.summary)); cannot re-initialize with (\(requested.summary))"
        case let .algorithmMismatch(_, found, expected):
            "repository algorithm \(found) does not match expected \(expected)"
        case .noObjectsToInferFrom:
            "no objects found in repository — cannot infer metadata"
        case let .invalidName(name):
            "invalid name '\(name)'"
        case let .notFound(what):
            "\(what) not found"
        case let .imageNotFound(name):
            "image not found: \(name)"
        case let .invalidFilesystem(reason):
            "invalid composefs filesystem: \(reason)"
        case let .digestMismatch(path, expected, actual):
            "fs-verity content mismatch for \(path): expected \(expected.hex), found \(actual.hex)"
        case let .verityMissing(path):
            "\(path) has no fs-verity but the repository requires it"
        case let .verity(path, error):
            "\(path): fs-verity: \(error)"
        case let .badImage(path, error):
            "\(path): \(error)"
        case let .imageWrite(error):
            "cannot write the composefs image: \(error)"
        case let .corrupt(path, reason):
            "\(path): \(reason)"
        case let .zeroCopyImpossible(path, reflink, hardLink):
            "\(path): reflink and hardlink both failed; copy fallback is disabled (zerocopy mode): reflink: \(reflink); hard link: \(hardLink)"
        case let .build(error):
            error.description
        case let .system(error):
            error.description
        }
    }
}

/// Runs a system operation, its failure a repository error.
@inline(__always)
func systemCall<T>(_ body: () throws(SystemError) -> T) throws(RepositoryError) -> T {
    do { return try body() } catch { throw .system(error) }
}
