// cache/digests-<hash>: the fs-verity digests of files imported before, keyed by the file's
// identity and change times (device, inode, size, mtime, ctime). ctime moves on every change
// to a file and cannot be set back, so a matching entry means the content is unchanged and a
// re-import need not read it. The cache is only a shortcut: losing it costs time, nothing else.
//
// Record layout (little-endian, fixed size): dev u64, ino u64, size u64, mtime_sec i64,
// mtime_nsec u32, ctime_sec i64, ctime_nsec u32, digest[digestSize].

import ComposeFS
import FsVerity
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

final class FileDigestCache: DigestCache {
    struct Key: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    struct Entry: Equatable {
        var size: Int64
        var mtime: timespec
        var ctime: timespec
        var digest: [UInt8]

        static func == (a: Entry, b: Entry) -> Bool {
            a.size == b.size && a.mtime.tv_sec == b.mtime.tv_sec && a.mtime.tv_nsec == b.mtime.tv_nsec
                && a.ctime.tv_sec == b.ctime.tv_sec && a.ctime.tv_nsec == b.ctime.tv_nsec && a.digest == b.digest
        }
    }

    static let headerSize = 8 * 3 + 8 + 4 + 8 + 4
    /// Bounds the file: beyond this many entries the oldest are dropped.
    static let maxEntries = 2_000_000

    let fileName: String
    let digestSize: Int
    private let entries: Mutex<[Key: Entry]>
    private let added = Atomic<Int>(0)

    /// Loads the cache of `repository` (an unreadable or malformed file counts as empty).
    init(repository: Repository) {
        fileName = "cache/digests-" + repository.algorithm.name
        digestSize = repository.algorithm.digestSize
        var loaded: [Key: Entry] = [:]
        if let bytes = try? readFile(at: repository.directory, fileName) {
            let recordSize = Self.headerSize + digestSize
            var offset = 0
            while offset + recordSize <= bytes.count {
                func u64(_ at: Int) -> UInt64 {
                    (0..<8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[offset + at + $1]) }
                }
                func u32(_ at: Int) -> UInt32 {
                    (0..<4).reversed().reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[offset + at + $1]) }
                }
                let key = Key(device: u64(0), inode: u64(8))
                loaded[key] = Entry(
                    size: Int64(bitPattern: u64(16)),
                    mtime: timespec(tv_sec: Int(Int64(bitPattern: u64(24))), tv_nsec: Int(u32(32))),
                    ctime: timespec(tv_sec: Int(Int64(bitPattern: u64(36))), tv_nsec: Int(u32(44))),
                    digest: Array(bytes[(offset + Self.headerSize)..<(offset + recordSize)]))
                offset += recordSize
            }
        }
        entries = Mutex(loaded)
    }

    func digest(for file: stat) -> [UInt8]? {
        let key = Key(device: UInt64(file.st_dev), inode: UInt64(file.st_ino))
        let wanted = Entry(size: Int64(file.st_size), mtime: file.st_mtim, ctime: file.st_ctim, digest: [])
        return entries.withLock { entries in
            guard var entry = entries[key] else { return nil }
            let digest = entry.digest
            entry.digest = []
            return entry == wanted ? digest : nil
        }
    }

    func record(_ file: stat, digest: [UInt8]) {
        let key = Key(device: UInt64(file.st_dev), inode: UInt64(file.st_ino))
        entries.withLock {
            $0[key] = Entry(size: Int64(file.st_size), mtime: file.st_mtim, ctime: file.st_ctim, digest: digest)
        }
        added.add(1, ordering: .relaxed)
    }

    /// Writes the cache back (temporary name, then rename) if anything was added.
    func save(in repository: Repository) throws(RepositoryError) {
        guard added.load(ordering: .relaxed) > 0 else { return }
        var bytes: [UInt8] = []
        entries.withLock { entries in
            bytes.reserveCapacity(min(entries.count, Self.maxEntries) * (Self.headerSize + digestSize))
            for (key, entry) in entries.prefix(Self.maxEntries) {
                func u64(_ value: UInt64) { for i in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) } }
                func u32(_ value: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) } }
                u64(key.device)
                u64(key.inode)
                u64(UInt64(bitPattern: entry.size))
                u64(UInt64(bitPattern: Int64(entry.mtime.tv_sec)))
                u32(UInt32(truncatingIfNeeded: entry.mtime.tv_nsec))
                u64(UInt64(bitPattern: Int64(entry.ctime.tv_sec)))
                u32(UInt32(truncatingIfNeeded: entry.ctime.tv_nsec))
                bytes += entry.digest
            }
        }
        let directory = try repository.openDirectory("cache", create: true)
        defer { close(directory) }
        let temporary = ".digests-" + randomName()
        let fd = openat(directory, temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .system(operation: "create", path: repository.path + "/cache/" + temporary, code: errno) }
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            guard count > 0 else {
                let code = errno
                close(fd)
                unlinkat(directory, temporary, 0)
                throw .system(operation: "write", path: repository.path + "/cache/" + temporary, code: code)
            }
            written += count
        }
        close(fd)
        let name = String(fileName.dropFirst("cache/".count))
        guard renameat(directory, temporary, directory, name) == 0 else {
            let code = errno
            unlinkat(directory, temporary, 0)
            throw .system(operation: "rename", path: repository.path + "/" + fileName, code: code)
        }
    }
}
