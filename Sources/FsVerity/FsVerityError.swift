#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

public enum FsVerityError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The kernel or the file system has no fs-verity support.
    case notSupported
    /// The file system supports fs-verity but it is not enabled on this file.
    case notEnabled
    /// fs-verity is already enabled on this file.
    case alreadyEnabled
    /// The kernel measured the file with a different algorithm than requested.
    case wrongAlgorithm(expected: FsVerityAlgorithm, actual: UInt16)
    /// The kernel measured the file with an algorithm this library does not know.
    case unknownAlgorithm(UInt16)
    /// Any other system call failure, carrying `errno`.
    case io(Int32)

    public var description: String {
        switch self {
        case .notSupported:
            "fs-verity is not supported on this file system"
        case .notEnabled:
            "fs-verity is not enabled on this file"
        case .alreadyEnabled:
            "fs-verity is already enabled on this file"
        case let .wrongAlgorithm(expected, actual):
            "file has fs-verity hash algorithm \(actual), expected \(expected.rawValue) (\(expected.name))"
        case let .unknownAlgorithm(code):
            "file has fs-verity hash algorithm \(code), which is not supported"
        case let .io(code):
            "I/O error: \(String(cString: strerror(code)))"
        }
    }
}
