// Errors from system calls, named by the file and operation that failed.

#if canImport(Glibc)
import Glibc
#endif

public struct SystemError: Error, Equatable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var code: Int32

    public init(_ operation: String, path: String, code: Int32 = errno) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    public var description: String {
        "\(operation) '\(path)': " + String(cString: strerror(code))
    }
}

/// Writes all of `buffer` to `fd`, retrying on EINTR and short writes.
func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws(SystemError) {
    var offset = 0
    while offset < buffer.count {
        guard let base = buffer.baseAddress else { return }
        let n = write(fd, base + offset, buffer.count - offset)
        if n < 0 {
            if errno == EINTR { continue }
            throw SystemError("write", path: path)
        }
        if n == 0 { throw SystemError("write", path: path, code: ENOSPC) }
        offset += n
    }
}
