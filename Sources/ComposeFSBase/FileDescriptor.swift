// An open file descriptor that closes itself, and the whole-buffer reads and writes every
// module needs (retrying on EINTR and short transfers).

import CComposeFSSys

#if canImport(Glibc)
import Glibc
#endif

/// Owns a descriptor: closed when the last reference goes.
public final class FileDescriptor: @unchecked Sendable {
    public let raw: Int32
    /// For error messages.
    public let path: String

    public init(owning raw: Int32, path: String) {
        self.raw = raw
        self.path = path
    }

    deinit { close(raw) }

    /// open(2) with O_CLOEXEC, relative to `directory` when given.
    public static func open(
        _ path: String, _ flags: Int32, mode: mode_t = 0, relativeTo directory: FileDescriptor? = nil
    ) throws(SystemError) -> FileDescriptor {
        let fd = openat(directory?.raw ?? AT_FDCWD, path, flags | O_CLOEXEC, mode)
        let shown = directory.map { $0.path + "/" + path } ?? path
        guard fd >= 0 else { throw SystemError("open", path: shown) }
        return FileDescriptor(owning: fd, path: shown)
    }

    /// An unnamed file in `directory` (O_TMPFILE, read-write): it gets a name only through
    /// `linkUnnamed`, and vanishes with its last descriptor otherwise.
    public static func openUnnamed(in directory: FileDescriptor, mode: mode_t) throws(SystemError) -> FileDescriptor {
        let fd = cfs_open_tmpfile(directory.raw, mode)
        guard fd >= 0 else { throw SystemError("create unnamed file (O_TMPFILE) in", path: directory.path, code: -fd) }
        return FileDescriptor(owning: fd, path: directory.path)
    }

    /// Opens `name` read-only below `directory` without leaving it: no `..` above it, no
    /// symlink pointing out, no /proc magic link, no other mount (openat2 RESOLVE_BENEATH).
    public static func openBeneath(_ name: String, in directory: FileDescriptor) throws(SystemError) -> FileDescriptor {
        let fd = cfs_openat_beneath(directory.raw, name)
        guard fd >= 0 else { throw SystemError("open", path: directory.path + "/" + name, code: -fd) }
        return FileDescriptor(owning: fd, path: directory.path + "/" + name)
    }

    /// A pipe's read and write ends, named `what` in errors.
    public static func pipe(_ what: String) throws(SystemError) -> (read: FileDescriptor, write: FileDescriptor) {
        var ends: [Int32] = [-1, -1]
        let result = cfs_pipe_cloexec(&ends)
        guard result == 0 else { throw SystemError("create", path: what, code: -result) }
        return (FileDescriptor(owning: ends[0], path: what), FileDescriptor(owning: ends[1], path: what))
    }

    /// An anonymous file in memory (memfd_create), named `name` only in /proc.
    public static func anonymousMemoryFile(_ name: String) throws(SystemError) -> FileDescriptor {
        let fd = cfs_memfd(name)
        guard fd >= 0 else { throw SystemError("memfd_create", path: name, code: -fd) }
        return FileDescriptor(owning: fd, path: "memfd:" + name)
    }

    /// Names an unnamed file `name` in `directory`, or gives a named one another name (a hard
    /// link); EEXIST when the name is taken.
    public func linkUnnamed(as name: String, in directory: FileDescriptor) throws(SystemError) {
        let result = cfs_link_tmpfile(raw, directory.raw, name)
        guard result == 0 else { throw SystemError("link", path: directory.path + "/" + name, code: -result) }
    }

    /// A second, read-only descriptor of the same file (through /proc, so unnamed files work too).
    public func reopenReadOnly() throws(SystemError) -> FileDescriptor {
        let fd = Glibc.open("/proc/self/fd/\(raw)", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("reopen read-only", path: path) }
        return FileDescriptor(owning: fd, path: path)
    }

    public func status() throws(SystemError) -> stat {
        var info = stat()
        guard fstat(raw, &info) == 0 else { throw SystemError("stat", path: path) }
        return info
    }

    public func readAll() throws(SystemError) -> [UInt8] { try ComposeFSBase.readAll(raw, path: path) }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) { try writeAll(raw, bytes, path: path) }

    public func write(_ bytes: [UInt8]) throws(SystemError) {
        try withBytes(bytes) { (buffer) throws(SystemError) in try writeAll(raw, buffer, path: path) }
    }

    public func sync() throws(SystemError) {
        guard fsync(raw) == 0 else { throw SystemError("fsync", path: path) }
    }
}

/// One read(2) at the current offset, retried on EINTR: up to `buffer.count` bytes, 0 at the end.
public func readSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String) throws(SystemError) -> Int {
    while true {
        let count = read(fd, buffer.baseAddress, buffer.count)
        if count >= 0 { return count }
        if errno != EINTR { throw SystemError("read", path: path) }
    }
}

/// One pread(2) at `offset`, retried on EINTR: up to `buffer.count` bytes, 0 at the end.
public func preadSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, path: String) throws(SystemError) -> Int {
    while true {
        let count = pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
        if count >= 0 { return count }
        if errno != EINTR { throw SystemError("read", path: path) }
    }
}

/// Reads from the current offset to the end of the file.
public func readAll(_ fd: Int32, path: String) throws(SystemError) -> [UInt8] {
    var result: [UInt8] = []
    let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
    defer { chunk.deallocate() }
    while true {
        let count = try readSome(fd, into: chunk, path: path)
        if count == 0 { return result }
        result.append(contentsOf: UnsafeRawBufferPointer(rebasing: chunk[..<count]))
    }
}

/// The whole content of the file at `path` (relative to `directory` when given); nil when it does
/// not exist.
public func readFile(_ path: String, relativeTo directory: Int32 = AT_FDCWD) throws(SystemError) -> [UInt8]? {
    let fd = openat(directory, path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        if errno == ENOENT { return nil }
        throw SystemError("open", path: path)
    }
    defer { close(fd) }
    return try readAll(fd, path: path)
}

/// Writes all of `buffer` at the current offset.
public func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws(SystemError) {
    var offset = 0
    while offset < buffer.count {
        guard let base = buffer.baseAddress else { return }
        let count = write(fd, base + offset, buffer.count - offset)
        if count < 0 {
            if errno == EINTR { continue }
            throw SystemError("write", path: path)
        }
        if count == 0 { throw SystemError("write", path: path, code: ENOSPC) }
        offset += count
    }
}

/// Writes all of `buffer` at `offset` (pwrite: the file offset does not move).
public func pwriteAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws(SystemError) {
    var done = 0
    while done < buffer.count {
        guard let base = buffer.baseAddress else { return }
        let count = pwrite(fd, base + done, buffer.count - done, off_t(offset) + off_t(done))
        if count < 0 {
            if errno == EINTR { continue }
            throw SystemError("write", path: path)
        }
        if count == 0 { throw SystemError("write", path: path, code: ENOSPC) }
        done += count
    }
}

/// Reads up to `buffer.count` bytes at `offset`, fewer only at the end of the file.
public func preadAll(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, path: String) throws(SystemError) -> Int {
    var done = 0
    while done < buffer.count {
        let count = try preadSome(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), at: offset + UInt64(done), path: path)
        if count == 0 { break }
        done += count
    }
    return done
}

/// CPUs this process may run on (its affinity mask), for sizing thread pools.
public var availableProcessors: Int { Int(cfs_available_cpus()) }

/// Marks every descriptor above stderr close-on-exec, before this process becomes another
/// program (a daemon must not hold a pipe or socket its caller waits on).
public func closeInheritedDescriptorsOnExec() { _ = cfs_cloexec_from(3) }
