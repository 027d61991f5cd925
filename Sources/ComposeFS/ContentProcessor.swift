// The content pass of building an image from a directory: fs-verity digests
// of regular files (they name the backing objects), inlining of small files,
// and copying large ones into a digest store. Runs on several threads.

import CComposeFSSys
import Dispatch
import FsVerity
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public struct ContentError: Error, CustomStringConvertible {
    public var path: [UInt8]
    public var reason: String
    public var description: String { "\(displayBytes(path)): \(reason)" }
}

/// Where the content pass puts the files too large to inline.
public protocol ObjectStore: Sendable {
    /// Makes sure an object named `objectPath` ("xx/yyyy…") with the open file's content
    /// exists. Called from several threads at once.
    func add(sourceFD: Int32, objectPath: [UInt8]) throws(SystemError)
}

/// Digests remembered from earlier runs, by file identity, so unchanged files need not be
/// read again. Called from several threads at once.
public protocol DigestCache: Sendable {
    /// The digest recorded for exactly this file state (device, inode, size, mtime, ctime).
    func digest(for file: stat) -> [UInt8]?
    func record(_ file: stat, digest: [UInt8])
}

public enum ContentProcessor {
    /// Object path of a digest in a store: "xx/yyyy…" (first byte as a directory).
    public static func objectPath(digest: [UInt8]) -> [UInt8] {
        let hex = Array(Hex.encode(digest).utf8)
        return Array(hex[0..<2]) + [UInt8(ascii: "/")] + Array(hex[2...])
    }

    /// Digests every non-empty file, inlines those of at most
    /// `Limits.recommendedInlineContentMax` bytes, and copies the others into `store` when given.
    /// `progress`, if given, hears (files done, files in all) from the worker threads.
    public static func process(
        files: [ScannedFile], threads: Int, algorithm: FsVerityAlgorithm = .sha256, store: (any ObjectStore)?,
        cache: (any DigestCache)? = nil, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)? = nil
    ) throws(ContentError) {
        // Largest first, so no thread is left hashing one big file at the end.
        let work = files.filter { $0.inode.size > 0 }.sorted { $0.inode.size > $1.inode.size }
        var results = [FileContent?](repeating: nil, count: work.count)
        let next = Atomic<Int>(0)
        let done = Atomic<Int>(0)
        let failed = Atomic<Bool>(false)
        let firstError = Mutex<ContentError?>(nil)
        let workerCount = max(1, min(threads, work.count))
        results.withUnsafeMutableBufferPointer { slots in
            let output = UnsafeSendable(slots)
            let input = UnsafeSendable(work)
            DispatchQueue.concurrentPerform(iterations: workerCount) { _ in
                while !failed.load(ordering: .relaxed) {
                    let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard i < input.value.count else { return }
                    let file = input.value[i]
                    do throws(ContentError) {
                        output.value[i] = try processFile(file, algorithm: algorithm, store: store, cache: cache)
                        if let progress { progress(done.wrappingAdd(1, ordering: .relaxed).newValue, input.value.count) }
                    } catch {
                        failed.store(true, ordering: .relaxed)
                        firstError.withLock { if $0 == nil { $0 = error } }
                        return
                    }
                }
            }
        }
        if let error = firstError.withLock({ $0 }) { throw error }
        for (file, result) in zip(work, results) {
            guard let result else { continue }
            file.inode.digest = result.digest
            file.inode.payload = result.objectPath
            if let content = result.content { file.inode.content = content }
        }
    }

    struct FileContent {
        let digest: [UInt8]
        let objectPath: [UInt8]
        let content: [UInt8]?
    }

    private static func processFile(
        _ file: ScannedFile, algorithm: FsVerityAlgorithm, store: (any ObjectStore)?, cache: (any DigestCache)?
    ) throws(ContentError) -> FileContent {
        let path = file.path
        func fail(_ what: String, _ code: Int32 = errno) -> ContentError {
            ContentError(path: path, reason: what + String(cString: strerror(code)))
        }
        let fd = withCString(path) { open($0, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { throw fail("open: ") }
        defer { close(fd) }
        var info = stat()
        if cache != nil { guard fstat(fd, &info) == 0 else { throw fail("stat: ") } }
        let digest: [UInt8]
        if let cached = cache?.digest(for: info) {
            digest = cached
        } else {
            do throws(FsVerityError) {
                digest = try FsVerity.digest(fileDescriptor: fd, algorithm: algorithm)
            } catch {
                throw ContentError(path: path, reason: "computing fs-verity digest: \(error)")
            }
            cache?.record(info, digest: digest)
        }
        let object = objectPath(digest: digest)
        let size = Int(clamping: file.inode.size)
        if size <= Limits.recommendedInlineContentMax {
            var content = [UInt8](repeating: 0, count: size)
            let n = content.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
            guard n >= 0 else { throw fail("read: ") }
            guard n == size else { throw ContentError(path: path, reason: "file changed size while reading") }
            return FileContent(digest: digest, objectPath: object, content: content)
        }
        if let store {
            do throws(SystemError) {
                try store.add(sourceFD: fd, objectPath: object)
            } catch {
                throw ContentError(path: path, reason: "cannot fill store: \(error)")
            }
        }
        return FileContent(digest: digest, objectPath: object, content: nil)
    }
}

/// A directory of backing files named by fs-verity digest ("xx/yyyy…").
public struct DigestStore: ObjectStore {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Copies (reflinks where possible) the open file into the store unless the
    /// object is already there. The object appears atomically, with fs-verity
    /// enabled when the filesystem supports it.
    public func add(sourceFD: Int32, objectPath: [UInt8]) throws(SystemError) {
        let destination = path + "/" + String(decoding: objectPath, as: UTF8.self)
        var st = stat()
        if lstat(destination, &st) == 0 { return }
        let objectDirectory = String(destination[..<(destination.lastIndex(of: "/") ?? destination.endIndex)])
        try makeDirectories(objectDirectory)

        var template = Array((path + "/.tmpXXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { cfs_mkostemp_cloexec($0.baseAddress!) }
        guard fd >= 0 else { throw SystemError("create temporary file in", path: path, code: -fd) }
        let temporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var keep = false
        defer { if !keep { unlink(temporary) } }
        do {
            defer { close(fd) }
            try copyContents(from: sourceFD, to: fd, destination: temporary)
            guard fchmod(fd, 0o644) == 0 else { throw SystemError("chmod", path: temporary) }
            guard fsync(fd) == 0 else { throw SystemError("fsync", path: temporary) }
        }
        // Verity can only be enabled on a file no one has open for writing.
        let readFD = open(temporary, O_RDONLY | O_CLOEXEC)
        if readFD >= 0 {
            _ = try? FsVerity.enable(fileDescriptor: readFD, algorithm: .sha256)
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
        let n = read(source, buffer.baseAddress, bufferSize)
        if n < 0 {
            if errno == EINTR { continue }
            throw SystemError("read source for", path: path)
        }
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

/// Calls `body` with a NUL-terminated copy of `bytes`.
func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
    (bytes + [0]).withUnsafeBufferPointer { buffer in
        buffer.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) }
    }
}

/// Hands a value to concurrent code that only touches disjoint parts of it.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
