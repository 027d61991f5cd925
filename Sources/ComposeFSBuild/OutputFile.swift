// An output file that appears whole or not at all: written to a temporary file
// beside the destination and renamed over it on success.

import CComposeFSSys
import ComposeFSBase

#if canImport(Glibc)
import Glibc
#endif

public final class OutputFile {
    public let path: String
    public let fd: Int32
    /// The temporary file to rename into place, or nil when writing the destination
    /// directly (stdout, or paths like /proc/self/fd/N that cannot be renamed over).
    private let temporaryPath: String?
    private let closeOnFinish: Bool
    private var committed = false

    /// Standard output.
    public static func standardOutput() -> OutputFile {
        OutputFile(path: "-", fd: 1, temporaryPath: nil, closeOnFinish: false)
    }

    private init(path: String, fd: Int32, temporaryPath: String?, closeOnFinish: Bool) {
        self.path = path
        self.fd = fd
        self.temporaryPath = temporaryPath
        self.closeOnFinish = closeOnFinish
    }

    public convenience init(creating path: String, mode: mode_t = 0o644) throws(SystemError) {
        var st = stat()
        let exists = stat(path, &st) == 0
        if exists && (st.st_mode & S_IFMT) != S_IFREG || path.hasPrefix("/proc/") || path.hasPrefix("/dev/") {
            // Devices, pipes and fd links: write in place.
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
            guard fd >= 0 else { throw SystemError("open", path: path) }
            self.init(path: path, fd: fd, temporaryPath: nil, closeOnFinish: true)
            return
        }
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { String(path[...$0]) } ?? ""
        var template = Array((directory + ".\(slash.map { String(path[path.index(after: $0)...]) } ?? path).tmpXXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { cfs_mkostemp_cloexec($0.baseAddress!) }
        guard fd >= 0 else { throw SystemError("create temporary file for", path: path, code: -fd) }
        fchmod(fd, mode & ~currentUmask())
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        self.init(path: path, fd: fd, temporaryPath: temporary, closeOnFinish: true)
    }

    public func write(_ buffer: UnsafeRawBufferPointer) throws(SystemError) {
        try writeAll(fd, buffer, path: path)
    }

    /// Moves the finished file into place.
    public func commit() throws(SystemError) {
        precondition(!committed)
        committed = true
        if closeOnFinish && close(fd) != 0 {
            let code = errno
            if let temporaryPath { unlink(temporaryPath) }
            throw SystemError("close", path: path, code: code)
        }
        if let temporaryPath, rename(temporaryPath, path) != 0 {
            let code = errno
            unlink(temporaryPath)
            throw SystemError("rename into place", path: path, code: code)
        }
    }

    deinit {
        guard !committed else { return }
        // Not committed: leave nothing behind (a file written in place is emptied).
        if let temporaryPath {
            unlink(temporaryPath)
        } else {
            var st = stat()
            if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { _ = ftruncate(fd, 0) }
        }
        if closeOnFinish { close(fd) }
    }
}

private func currentUmask() -> mode_t {
    let mask = umask(0o022)
    umask(mask)
    return mask
}
