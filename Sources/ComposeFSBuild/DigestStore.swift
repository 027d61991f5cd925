// mkcomposefs's --digest-store: a directory of backing files named by fs-verity digest
// ("xx/yyyy…"), and the fastest way to copy a file into one.

import CComposeFSSys
import ComposeFSBase
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

public struct DigestStore: ObjectStore {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Copies (reflinks where possible) the open file into the store unless the object is
    /// already there. The object appears atomically, with fs-verity enabled when the file
    /// system supports it.
    public func add(source: Int32, id: ObjectID, size: UInt64) throws {
        let destination = path + "/" + id.objectPath
        var st = stat()
        if lstat(destination, &st) == 0 { return }
        try makeDirectories(String(destination[..<(destination.lastIndex(of: "/") ?? destination.endIndex)]))

        var template = Array((path + "/.tmpXXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { cfs_mkostemp_cloexec($0.baseAddress!) }
        guard fd >= 0 else { throw SystemError("create temporary file in", path: path, code: -fd) }
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var keep = false
        defer { if !keep { unlink(temporary) } }
        do {
            defer { close(fd) }
            try copyContents(from: source, to: fd, destination: temporary)
            guard fchmod(fd, 0o644) == 0 else { throw SystemError("chmod", path: temporary) }
            guard fsync(fd) == 0 else { throw SystemError("fsync", path: temporary) }
        }
        // Verity can only be enabled once no descriptor is open for writing.
        let readFD = open(temporary, O_RDONLY | O_CLOEXEC)
        if readFD >= 0 {
            _ = try? FsVerity.enable(fileDescriptor: readFD, algorithm: id.algorithm)
            close(readFD)
        }
        guard rename(temporary, destination) == 0 else { throw SystemError("rename", path: destination) }
        keep = true
    }
}

/// FICLONE, else copy_file_range, else read/write.
public func copyContents(from source: Int32, to destination: Int32, destination path: String) throws(SystemError) {
    if cfs_ficlone(destination, source) == 0 { return }
    guard lseek(source, 0, SEEK_SET) == 0 else { throw SystemError("seek", path: path) }
    var useCopyFileRange = true
    var copied = 0
    while useCopyFileRange {
        let n = cfs_copy_file_range(source, destination, 1 << 30)
        if n > 0 {
            copied += n
            continue
        }
        if n == 0 { return }
        let code = Int32(-n)
        if code == EINTR { continue }
        // Not supported between these files: fall back, unless data was already copied.
        guard copied == 0, [ENOSYS, EXDEV, EOPNOTSUPP, EPERM, EINVAL, EBADF].contains(code) else {
            throw SystemError("copy_file_range", path: path, code: code)
        }
        useCopyFileRange = false
    }
    let bufferSize = 1 << 20
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 16)
    defer { buffer.deallocate() }
    while true {
        let n: Int
        do { n = try readSome(source, into: buffer, path: path) } catch { throw SystemError("read source for", path: path, code: error.code) }
        if n == 0 { return }
        try writeAll(destination, UnsafeRawBufferPointer(rebasing: buffer[0..<n]), path: path)
    }
}

/// mkdir -p with mode 0755.
func makeDirectories(_ path: String) throws(SystemError) {
    var st = stat()
    if stat(path, &st) == 0 {
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw SystemError("mkdir", path: path, code: ENOTDIR) }
        return
    }
    if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
        try makeDirectories(String(path[..<slash]))
    }
    if mkdir(path, 0o755) != 0 && errno != EEXIST { throw SystemError("mkdir", path: path) }
}
