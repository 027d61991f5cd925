// A file's whole content as memory: mapped when it is a regular file, read otherwise (pipes).

#if canImport(Glibc)
import Glibc
#endif

public final class MappedFile: @unchecked Sendable {
    public let bytes: UnsafeRawBufferPointer
    /// Whether `bytes` is a mapping (to unmap) rather than an allocation (to free).
    private let mapped: Bool

    /// Maps `path`, or the open `fd` when given (the caller keeps it); `path` then only names it.
    public init(path: String, fd given: Int32? = nil) throws(SystemError) {
        let fd = given ?? open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path: path) }
        defer { if given == nil { close(fd) } }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemError("stat", path: path) }
        if (info.st_mode & S_IFMT) == S_IFREG && info.st_size > 0 {
            let size = Int(info.st_size)
            guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
                throw SystemError("mmap", path: path)
            }
            bytes = UnsafeRawBufferPointer(start: base, count: size)
            mapped = true
            return
        }
        let content = try readAll(fd, path: path)
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: max(content.count, 1), alignment: 16)
        content.withUnsafeBytes { copy.copyMemory(from: $0) }
        bytes = UnsafeRawBufferPointer(rebasing: copy[..<content.count])
        mapped = false
    }

    deinit {
        if mapped {
            munmap(UnsafeMutableRawPointer(mutating: bytes.baseAddress), bytes.count)
        } else {
            bytes.baseAddress.map { UnsafeMutableRawPointer(mutating: $0).deallocate() }
        }
    }
}
