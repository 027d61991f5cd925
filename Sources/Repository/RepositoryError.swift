#if canImport(Glibc)
import Glibc
#endif

public enum RepositoryError: Error, Equatable, CustomStringConvertible {
    case invalidAlgorithm(String)
    case invalidMetadata(String)
    /// The repository needs something this implementation does not have.
    case unsupported(String)
    case notInitialized(path: String)
    case alreadyInitialized(path: String, algorithm: String)
    /// A name that is neither a digest of the repository's algorithm nor `refs/…`.
    case invalidName(String)
    case notFound(String)
    /// The kernel's fs-verity digest of a file is not the one its name promises.
    case digestMismatch(path: String, expected: String, actual: String)
    /// A secure repository holds a file without fs-verity.
    case verityMissing(path: String)
    case corrupt(path: String, reason: String)
    case system(operation: String, path: String, code: Int32)

    public var description: String {
        switch self {
        case let .invalidAlgorithm(message), let .invalidMetadata(message), let .unsupported(message):
            message
        case let .notInitialized(path):
            "meta.json not found in \(path); this repository must be initialized with `cfsctl init`"
        case let .alreadyInitialized(path, algorithm):
            "repository \(path) already initialized with algorithm '\(algorithm)'"
        case let .invalidName(name):
            "invalid name '\(name)': expected a hex digest or refs/NAME"
        case let .notFound(what):
            "\(what) not found"
        case let .digestMismatch(path, expected, actual):
            "fs-verity content mismatch for \(path): expected \(expected), found \(actual)"
        case let .verityMissing(path):
            "\(path) has no fs-verity but the repository requires it"
        case let .corrupt(path, reason):
            "\(path): \(reason)"
        case let .system(operation, path, code):
            "\(operation) '\(path)': \(String(cString: strerror(code)))"
        }
    }
}
