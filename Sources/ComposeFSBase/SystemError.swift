// The one error type for failed system calls: what was being done, to which file, and errno.

#if canImport(Glibc)
import Glibc
#endif

public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What was being done, e.g. "open" or "create temporary file for".
    public var operation: String
    public var path: String
    public var code: Int32

    /// `code` defaults to the current errno, so call this right after the failing call.
    public init(_ operation: String, path: String, code: Int32 = errno) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    public var description: String { "\(operation) '\(path)': \(SystemError.message(code))" }

    /// strerror(3) of a code.
    public static func message(_ code: Int32) -> String { String(cString: strerror(code)) }
}
