// A comparable record of a directory tree as the kernel presents it, for checking that a
// mounted image shows exactly the tree it was built from.

import CComposeFSSys
import Crypto
import Foundation
import Glibc

struct TreeSnapshot {
    struct Entry: Equatable {
        var type: mode_t
        var permissions: mode_t
        var uid: uid_t
        var gid: gid_t
        var mtime: Int
        var mtimeNanoseconds: Int
        var size: Int
        var rdev: UInt
        var symlinkTarget: String?
        var xattrs: [String: [UInt8]]
        var contentDigest: String?
        /// The first path (in sorted order) that shares this entry's inode, when another does.
        var hardlinkGroup: String?
    }

    struct Options {
        /// Which xattr names to record (a kernel mount hides some, the source has them all).
        var includeXattr: (String) -> Bool = { _ in true }
        /// Directory mtimes change when a test writes into the tree; skip them where needed.
        var compareDirectoryMtimes = true
        var readContents = true
        /// Paths (from the root, with a leading slash) to leave out.
        var excluding: Set<String> = []
    }

    var entries: [String: Entry] = [:]
    /// Whether regular files' contents were read (and their digests recorded).
    var includesContents = false

    static func capture(root: String, options: Options = Options()) throws -> TreeSnapshot {
        var snapshot = TreeSnapshot()
        snapshot.includesContents = options.readContents
        var pending = [""]
        var paths: [(String, stat)] = []
        while let relative = pending.popLast() {
            if options.excluding.contains("/" + relative) { continue }
            let path = relative.isEmpty ? root : root + "/" + relative
            var info = stat()
            guard lstat(path, &info) == 0 else { throw SnapshotError("lstat \(path): \(errnoText())") }
            paths.append((relative, info))
            if info.st_mode & S_IFMT == S_IFDIR {
                for name in try FileManager.default.contentsOfDirectory(atPath: path) {
                    pending.append(relative.isEmpty ? name : relative + "/" + name)
                }
            }
        }
        paths.sort { $0.0 < $1.0 }
        // Paths sharing an inode within this tree, first one in sorted order first.
        var pathsByInode: [UInt64: [String]] = [:]
        for (relative, info) in paths where info.st_mode & S_IFMT != S_IFDIR && info.st_nlink > 1 {
            pathsByInode[UInt64(info.st_ino), default: []].append(relative)
        }
        for (relative, info) in paths {
            let path = relative.isEmpty ? root : root + "/" + relative
            let type = info.st_mode & S_IFMT
            var entry = Entry(
                type: type, permissions: info.st_mode & 0o7777, uid: info.st_uid, gid: info.st_gid,
                mtime: info.st_mtim.tv_sec, mtimeNanoseconds: info.st_mtim.tv_nsec,
                size: type == S_IFDIR ? 0 : Int(info.st_size),
                rdev: type == S_IFCHR || type == S_IFBLK ? UInt(info.st_rdev) : 0,
                symlinkTarget: nil, xattrs: try xattrs(of: path, including: options.includeXattr),
                contentDigest: nil, hardlinkGroup: nil)
            if type == S_IFDIR && !options.compareDirectoryMtimes {
                entry.mtime = 0
                entry.mtimeNanoseconds = 0
            }
            if type == S_IFLNK {
                // Not FileManager: it cuts targets off at 1026 bytes.
                var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let count = readlink(path, &target, target.count)
                guard count >= 0 else { throw SnapshotError("readlink \(path): \(errnoText())") }
                entry.symlinkTarget = String(decoding: target[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            if type == S_IFREG && options.readContents {
                entry.contentDigest = try contentDigest(of: path)
            }
            if type != S_IFDIR, let group = pathsByInode[UInt64(info.st_ino)], group.count > 1 {
                entry.hardlinkGroup = group[0]
            }
            snapshot.entries[relative.isEmpty ? "/" : "/" + relative] = entry
        }
        return snapshot
    }

    /// One line per path that is missing, extra or different, empty when the trees match.
    func differences(from other: TreeSnapshot) -> [String] {
        var lines: [String] = []
        for path in Set(entries.keys).union(other.entries.keys).sorted() {
            switch (entries[path], other.entries[path]) {
            case (nil, _): lines.append("\(path): only in the other tree")
            case (_, nil): lines.append("\(path): missing from the other tree")
            case (let mine?, let theirs?) where mine != theirs:
                lines.append("\(path): \(describeDifference(mine, theirs))")
            default: break
            }
        }
        return lines
    }

    /// The fields that differ, as "field: mine != theirs", long values abbreviated.
    private func describeDifference(_ mine: Entry, _ theirs: Entry) -> String {
        func show(_ value: Any?) -> String {
            let text = value.map { "\($0)" } ?? "-"
            return text.count > 80 ? "\(text.prefix(40))…(\(text.count) chars)" : text
        }
        let fields: [(String, Any?, Any?)] = [
            ("type", String(mine.type, radix: 8), String(theirs.type, radix: 8)),
            ("mode", String(mine.permissions, radix: 8), String(theirs.permissions, radix: 8)),
            ("owner", "\(mine.uid):\(mine.gid)", "\(theirs.uid):\(theirs.gid)"),
            ("mtime", "\(mine.mtime).\(mine.mtimeNanoseconds)", "\(theirs.mtime).\(theirs.mtimeNanoseconds)"),
            ("size", mine.size, theirs.size), ("rdev", mine.rdev, theirs.rdev),
            ("symlink", mine.symlinkTarget, theirs.symlinkTarget),
            ("xattrs", mine.xattrs.sorted { $0.key < $1.key }, theirs.xattrs.sorted { $0.key < $1.key }),
            ("content", mine.contentDigest, theirs.contentDigest),
            ("hardlink", mine.hardlinkGroup, theirs.hardlinkGroup),
        ]
        return fields.filter { show($0.1) != show($0.2) || "\($0.1 ?? "-")" != "\($0.2 ?? "-")" }
            .map { "\($0.0): \(show($0.1)) != \(show($0.2))" }.joined(separator: "; ")
    }

    private static func xattrs(of path: String, including include: (String) -> Bool) throws -> [String: [UInt8]] {
        let listSize = cfs_llistxattr(path, nil, 0)
        if listSize == -Int(EOPNOTSUPP) { return [:] }
        guard listSize >= 0 else { throw SnapshotError("llistxattr \(path): \(String(cString: strerror(Int32(-listSize))))") }
        var names = [CChar](repeating: 0, count: listSize + 1)
        let listed = cfs_llistxattr(path, &names, listSize)
        guard listed >= 0 else { throw SnapshotError("llistxattr \(path): \(String(cString: strerror(Int32(-listed))))") }
        var result: [String: [UInt8]] = [:]
        for nameBytes in names[..<listed].split(separator: 0) {
            let name = String(decoding: nameBytes.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard include(name) else { continue }
            let size = cfs_lgetxattr(path, name, nil, 0)
            // The kernel lists user.* xattrs of symlinks and devices but will not read them.
            if size == -Int(ENODATA) && name.hasPrefix("user.") { continue }
            guard size >= 0 else { throw SnapshotError("lgetxattr \(path) \(name): \(String(cString: strerror(Int32(-size))))") }
            var value = [UInt8](repeating: 0, count: size)
            let read = cfs_lgetxattr(path, name, &value, size)
            guard read >= 0 else { throw SnapshotError("lgetxattr \(path) \(name): \(String(cString: strerror(Int32(-read))))") }
            result[name] = Array(value[..<read])
        }
        return result
    }

    private static func contentDigest(of path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SnapshotError("open \(path): \(errnoText())") }
        defer { close(fd) }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count >= 0 else { throw SnapshotError("read \(path): \(errnoText())") }
            if count == 0 { break }
            buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

struct SnapshotError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func errnoText() -> String { String(cString: strerror(errno)) }
