// The content pass of building an image from a directory: fs-verity digests of regular
// files (they name the backing objects), inlining of small files, and handing large ones to
// an object store. Runs on several threads.

import ComposeFS
import ComposeFSBase
import Dispatch
import FsVerity
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A regular file whose content could not be processed, and why.
public struct ContentError: Error, CustomStringConvertible {
    public enum Reason: Sendable {
        /// A system call (`operation`: "open", "stat", "read") failed with this errno.
        case system(operation: String, code: Int32)
        case digest(FsVerityError)
        case changedSize
        /// The object store refused the file.
        case store(any Error)
    }

    public var path: [UInt8]
    public var reason: Reason

    public var description: String {
        let text = switch reason {
        case let .system(operation, code): "\(operation): \(SystemError.message(code))"
        case let .digest(error): "computing fs-verity digest: \(error)"
        case .changedSize: "file changed size while reading"
        case let .store(error): "cannot fill store: \(error)"
        }
        return "\(displayBytes(path)): \(text)"
    }
}

/// Where the content pass puts the files too large to inline.
public protocol ObjectStore: Sendable {
    /// Makes sure the object `id` exists with the content of the open file (of `size` bytes).
    /// Called from several threads at once.
    func add(source: Int32, id: ObjectID, size: UInt64) throws
}

/// Digests remembered from earlier runs, by file identity, so unchanged files need not be
/// read again. Called from several threads at once.
public protocol DigestCache: Sendable {
    /// The digest recorded for exactly this file state (device, inode, size, mtime, ctime).
    func digest(for file: stat) -> ObjectID?
    func record(_ file: stat, digest: ObjectID)
}

enum ContentProcessor {
    /// Digests every non-empty file, inlines those of at most
    /// `Limits.recommendedInlineContentMax` bytes, and hands the others to `store` when given.
    /// `progress`, if given, hears (files done, files in all) from the worker threads.
    static func process(
        files: [ScannedFile], threads: Int, algorithm: FsVerityAlgorithm, store: (any ObjectStore)?,
        cache: (any DigestCache)?, progress: (@Sendable (_ done: Int, _ total: Int) -> Void)?
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
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readBufferSize, alignment: 4096)
                defer { buffer.deallocate() }
                while !failed.load(ordering: .relaxed) {
                    let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard i < input.value.count else { return }
                    do throws(ContentError) {
                        output.value[i] = try processFile(
                            input.value[i], algorithm: algorithm, store: store, cache: cache, buffer: buffer, threads: threads)
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
            file.inode.payload = Array(result.digest.objectPath.utf8)
            if let content = result.content { file.inode.content = content }
        }
    }

    struct FileContent {
        let digest: ObjectID
        let content: [UInt8]?
    }

    /// Each worker's read buffer.
    static let readBufferSize = 1 << 20

    /// Files at least this large are digested on every thread (largest first, they come while
    /// the other workers are busy with files of their own only when there are several).
    static let parallelDigestMin = 64 << 20

    private static func processFile(
        _ file: ScannedFile, algorithm: FsVerityAlgorithm, store: (any ObjectStore)?, cache: (any DigestCache)?,
        buffer: UnsafeMutableRawBufferPointer, threads: Int
    ) throws(ContentError) -> FileContent {
        let path = file.path
        func fail(_ operation: String, _ code: Int32 = errno) -> ContentError {
            ContentError(path: path, reason: .system(operation: operation, code: code))
        }
        let fd = (path + [0]).withUnsafeBufferPointer { name in
            name.withMemoryRebound(to: CChar.self) { open($0.baseAddress!, O_RDONLY | O_CLOEXEC) }
        }
        guard fd >= 0 else { throw fail("open") }
        defer { close(fd) }
        let size = Int(clamping: file.inode.size)
        if size <= Limits.recommendedInlineContentMax {
            // Inlined: one read gives the content and what the digest is computed from.
            var content = [UInt8](repeating: 0, count: size)
            let count = content.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
            guard count >= 0 else { throw fail("read") }
            guard count == size else { throw ContentError(path: path, reason: .changedSize) }
            return FileContent(digest: FsVerity.digest(of: content, algorithm: algorithm), content: content)
        }
        var info = stat()
        if cache != nil { guard fstat(fd, &info) == 0 else { throw fail("stat") } }
        let digest: ObjectID
        if let cached = cache?.digest(for: info), cached.algorithm == algorithm {
            digest = cached
        } else {
            do throws(FsVerityError) {
                digest = size >= parallelDigestMin && threads > 1
                    ? try FsVerity.digest(fileDescriptor: fd, algorithm: algorithm, threads: threads)
                    : try FsVerity.digest(fileDescriptor: fd, algorithm: algorithm, readBuffer: buffer)
            } catch {
                throw ContentError(path: path, reason: .digest(error))
            }
            cache?.record(info, digest: digest)
        }
        if let store {
            do {
                try store.add(source: fd, id: digest, size: file.inode.size)
            } catch {
                throw ContentError(path: path, reason: .store(error))
            }
        }
        return FileContent(digest: digest, content: nil)
    }
}

/// Hands a value to concurrent code that only touches disjoint parts of it.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
