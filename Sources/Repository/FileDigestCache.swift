// cache/digests-<hash>: the fs-verity digests of files imported before, keyed by the file's
// identity and change times (device, inode, size, mtime, ctime). ctime moves on every change
// to a file and cannot be set back, so a matching entry means the content is unchanged and a
// re-import need not read it. The cache is only a shortcut: losing it costs time, nothing else.
//
// Record layout (little-endian, fixed size): dev u64, ino u64, size u64, mtime_sec i64,
// mtime_nsec u32, ctime_sec i64, ctime_nsec u32, digest[digestSize].

import ComposeFSBase
import ComposeFSBuild
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

    struct Entry {
        var size: Int64
        var mtime: timespec
        var ctime: timespec
        var digest: ObjectID

        /// Whether the entry was recorded for a file in exactly this state.
        func matches(_ file: stat) -> Bool {
            size == Int64(file.st_size) && mtime.tv_sec == file.st_mtim.tv_sec && mtime.tv_nsec == file.st_mtim.tv_nsec
                && ctime.tv_sec == file.st_ctim.tv_sec && ctime.tv_nsec == file.st_ctim.tv_nsec
        }
    }

    static let headerSize = 8 * 3 + 8 + 4 + 8 + 4
    /// Bounds the file: beyond this many entries, the rest (whichever they are) are not saved.
    static let maxEntries = 2_000_000

    let fileName: String
    let algorithm: FsVerityAlgorithm
    private let entries: Mutex<[Key: Entry]>
    private let added = Atomic<Int>(0)

    /// Loads the cache of `repository` (an unreadable or malformed file counts as empty).
    init(repository: Repository) {
        let fileName = "cache/digests-" + repository.algorithm.name
        let algorithm = repository.algorithm
        self.fileName = fileName
        self.algorithm = algorithm
        var loaded: [Key: Entry] = [:]
        if let bytes = try? repository.readFile(fileName) {
            let recordSize = Self.headerSize + algorithm.digestSize
            bytes.withUnsafeBytes { buffer in
                var offset = 0
                while offset + recordSize <= buffer.count {
                    if let (key, entry) = try? Self.decode(ByteReader(UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + recordSize])), algorithm) {
                        loaded[key] = entry
                    }
                    offset += recordSize
                }
            }
        }
        entries = Mutex(loaded)
    }

    // MARK: Record layout

    static func decode(_ record: ByteReader, _ algorithm: FsVerityAlgorithm) throws(OutOfBounds) -> (Key, Entry)? {
        let key = Key(device: try record.u64(at: 0), inode: try record.u64(at: 8))
        guard let digest = ObjectID(algorithm: algorithm, bytes: try record.slice(at: headerSize, count: algorithm.digestSize)) else {
            return nil
        }
        let entry = Entry(
            size: Int64(bitPattern: try record.u64(at: 16)),
            mtime: timespec(tv_sec: Int(Int64(bitPattern: try record.u64(at: 24))), tv_nsec: Int(try record.u32(at: 32))),
            ctime: timespec(tv_sec: Int(Int64(bitPattern: try record.u64(at: 36))), tv_nsec: Int(try record.u32(at: 44))),
            digest: digest)
        return (key, entry)
    }

    static func encode(_ key: Key, _ entry: Entry, into out: inout ByteWriter) {
        out.u64(key.device)
        out.u64(key.inode)
        out.u64(UInt64(bitPattern: entry.size))
        out.u64(UInt64(bitPattern: Int64(entry.mtime.tv_sec)))
        out.u32(UInt32(truncatingIfNeeded: entry.mtime.tv_nsec))
        out.u64(UInt64(bitPattern: Int64(entry.ctime.tv_sec)))
        out.u32(UInt32(truncatingIfNeeded: entry.ctime.tv_nsec))
        out.bytes(entry.digest.bytes)
    }

    // MARK: DigestCache

    func digest(for file: stat) -> ObjectID? {
        let key = Key(device: UInt64(file.st_dev), inode: UInt64(file.st_ino))
        return entries.withLock { entries in
            guard let entry = entries[key], entry.matches(file) else { return nil }
            return entry.digest
        }
    }

    func record(_ file: stat, digest: ObjectID) {
        let key = Key(device: UInt64(file.st_dev), inode: UInt64(file.st_ino))
        entries.withLock {
            $0[key] = Entry(size: Int64(file.st_size), mtime: file.st_mtim, ctime: file.st_ctim, digest: digest)
        }
        added.add(1, ordering: .relaxed)
    }

    /// Writes the cache back (temporary name, then rename) if anything was added.
    func save(in repository: Repository) throws(RepositoryError) {
        guard added.load(ordering: .relaxed) > 0 else { return }
        var out = ByteWriter()
        entries.withLock { entries in
            out.bytes.reserveCapacity(min(entries.count, Self.maxEntries) * (Self.headerSize + algorithm.digestSize))
            for (key, entry) in entries.prefix(Self.maxEntries) { Self.encode(key, entry, into: &out) }
        }
        let directory = try repository.openDirectory("cache", create: true)
        let temporary = ".digests-" + randomName()
        let fd = openat(directory.raw, temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .system(SystemError("create", path: directory.path + "/" + temporary)) }
        do throws(SystemError) {
            defer { close(fd) }
            try withBytes(out.bytes) { (buffer) throws(SystemError) in try writeAll(fd, buffer, path: directory.path + "/" + temporary) }
        } catch {
            unlinkat(directory.raw, temporary, 0)
            throw .system(error)
        }
        let name = String(fileName.dropFirst("cache/".count))
        guard renameat(directory.raw, temporary, directory.raw, name) == 0 else {
            let code = errno
            unlinkat(directory.raw, temporary, 0)
            throw .system(SystemError("rename", path: repository.path + "/" + fileName, code: code))
        }
    }
}
