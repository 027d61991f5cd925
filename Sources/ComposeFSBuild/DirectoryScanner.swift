// Reads a directory tree from disk into a composefs tree, with the same
// choices as the reference mkcomposefs so the resulting images are identical:
// every path is its own inode (nlink 1; hard links are not merged), directory
// nlink is recomputed, and file content is handled afterwards by ContentProcessor.

import CComposeFSSys
import ComposeFS
import ComposeFSBase
import EROFS

#if canImport(Glibc)
import Glibc
#endif

public struct ScanOptions: Sendable {
    /// Store no xattrs.
    public var skipXattrs = false
    /// Store only user.* xattrs.
    public var userXattrsOnly = false
    /// Zero every mtime.
    public var useEpoch = false
    /// Leave out block and character devices.
    public var skipDevices = false
    /// Keep hard links (entries with the same device and inode share one inode), as composefs-rs
    /// does; mkcomposefs gives every path its own.
    public var keepHardlinks = false

    public init(
        skipXattrs: Bool = false, userXattrsOnly: Bool = false, useEpoch: Bool = false, skipDevices: Bool = false,
        keepHardlinks: Bool = false
    ) {
        self.skipXattrs = skipXattrs
        self.userXattrsOnly = userXattrsOnly
        self.useEpoch = useEpoch
        self.skipDevices = skipDevices
        self.keepHardlinks = keepHardlinks
    }
}

/// A file of the tree that could not be read, and why.
public struct ScanError: Error, CustomStringConvertible {
    public enum Reason: Sendable {
        /// A system call failed with this errno.
        case system(Int32)
        /// The file cannot be part of a composefs tree.
        case tree(TreeError)
        case emptySymlinkTarget
        case symlinkTargetTooLong
        case notADirectory
    }

    public var path: [UInt8]
    public var reason: Reason

    public var description: String {
        let text = switch reason {
        case let .system(code): SystemError.message(code)
        case let .tree(error): error.description
        case .emptySymlinkTarget: "empty symlink target"
        case .symlinkTargetTooLong: "symlink target too long"
        case .notADirectory: "not a directory"
        }
        return "error accessing \(displayBytes(path)): \(text)"
    }
}

/// A regular file found by the scan, for content processing.
public struct ScannedFile {
    public let inode: Inode
    /// Path of the file on disk (arbitrary bytes, no terminator).
    public let path: [UInt8]
}

public struct DirectoryScanner {
    let options: ScanOptions
    /// Regular files in scan order.
    private(set) var files: [ScannedFile] = []
    private let direntBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 8)
    private var listBuffer: [CChar] = Array(repeating: 0, count: 1 << 12)
    private var valueBuffer: [UInt8] = Array(repeating: 0, count: 1 << 12)
    /// With `keepHardlinks`: the inode of each (device, inode) met so far.
    private var inodes: [FileIdentity: Inode] = [:]

    struct FileIdentity: Hashable {
        var device: UInt64
        var inode: UInt64
    }

    static let userPrefix = Array("user.".utf8)

    private init(options: ScanOptions) {
        self.options = options
    }

    /// Scans `path` (which must be a directory) recursively.
    public static func scan(path: [UInt8], options: ScanOptions) throws(ScanError) -> (root: Inode, files: [ScannedFile]) {
        var scanner = DirectoryScanner(options: options)
        defer { scanner.direntBuffer.deallocate() }
        let cPath = path.map { CChar(bitPattern: $0) } + [0]
        let root = try cPath.withUnsafeBufferPointer { (name) throws(ScanError) in
            try scanner.load(dirfd: AT_FDCWD, name: name.baseAddress!, path: path)
        }
        guard root.isDirectory else { throw ScanError(path: path, reason: .notADirectory) }
        try cPath.withUnsafeBufferPointer { (name) throws(ScanError) in
            try scanner.scanDirectory(root, dirfd: AT_FDCWD, name: name.baseAddress!, path: path)
        }
        return (root, scanner.files)
    }

    private func fail(_ path: [UInt8], _ code: Int32 = errno) -> ScanError {
        ScanError(path: path, reason: .system(code))
    }

    /// Reads one file's metadata (not its content).
    private mutating func load(dirfd: Int32, name: UnsafePointer<CChar>, path: [UInt8]) throws(ScanError) -> Inode {
        var st = stat()
        guard fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw fail(path) }
        let identity = FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        let isDirectory = (st.st_mode & S_IFMT) == S_IFDIR
        if options.keepHardlinks && !isDirectory, let seen = inodes[identity] { return seen }
        let inode = Inode(mode: UInt32(st.st_mode))
        if options.keepHardlinks && !isDirectory { inodes[identity] = inode }
        inode.uid = st.st_uid
        inode.gid = st.st_gid
        inode.rdev = UInt32(truncatingIfNeeded: st.st_rdev)
        inode.size = UInt64(st.st_size)
        if !options.useEpoch {
            inode.mtime = Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: UInt32(truncatingIfNeeded: st.st_mtim.tv_nsec))
        }
        if inode.isSymlink {
            var target = [UInt8](repeating: 0, count: Limits.pathMax + 1)
            let n = target.withUnsafeMutableBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { readlinkat(dirfd, name, $0.baseAddress!, Limits.pathMax) }
            }
            guard n >= 0 else { throw fail(path) }
            guard n > 0, n < Limits.pathMax else {
                throw ScanError(path: path, reason: n == 0 ? .emptySymlinkTarget : .symlinkTargetTooLong)
            }
            inode.payload = Array(target[0..<n])
            inode.size = UInt64(n)
        } else if inode.isRegular {
            files.append(ScannedFile(inode: inode, path: path))
        }
        if !options.skipXattrs {
            // The l*xattr calls on /proc/self/fd/DIR/NAME act on the entry itself, even a symlink.
            try readXattrs(into: inode, path: path, name: name, dirfd: dirfd)
        }
        return inode
    }

    private mutating func readXattrs(into inode: Inode, path: [UInt8], name: UnsafePointer<CChar>, dirfd: Int32) throws(ScanError) {
        var fullName = dirfd == AT_FDCWD ? [] : Array("/proc/self/fd/\(dirfd)/".utf8CString.dropLast())
        var i = 0
        while name[i] != 0 { fullName.append(name[i]); i += 1 }
        fullName.append(0)
        try fullName.withUnsafeBufferPointer { (cTarget) throws(ScanError) in
            let target = cTarget.baseAddress!
            var listSize: Int
            while true {
                listSize = listBuffer.withUnsafeMutableBufferPointer { cfs_llistxattr(target, $0.baseAddress, $0.count) }
                if listSize >= 0 { break }
                if listSize == -Int(ENOTSUP) { return }
                guard listSize == -Int(ERANGE) else { throw fail(path, Int32(-listSize)) }
                let needed = cfs_llistxattr(target, nil, 0)
                guard needed >= 0 else { throw fail(path, Int32(-needed)) }
                listBuffer = Array(repeating: 0, count: max(needed, listBuffer.count * 2))
            }
            var start = 0
            while start < listSize {
                var end = start
                while end < listSize && listBuffer[end] != 0 { end += 1 }
                defer { start = end + 1 }
                if end == start { continue }
                let key = listBuffer[start..<end].map { UInt8(bitPattern: $0) }
                if options.userXattrsOnly && !key.starts(with: Self.userPrefix) { continue }
                let keyStart = start
                var valueSize: Int
                while true {
                    valueSize = listBuffer.withUnsafeBufferPointer { keys in
                        valueBuffer.withUnsafeMutableBytes { cfs_lgetxattr(target, keys.baseAddress! + keyStart, $0.baseAddress, $0.count) }
                    }
                    if valueSize >= 0 { break }
                    guard valueSize == -Int(ERANGE) else { throw fail(path, Int32(-valueSize)) }
                    let needed = listBuffer.withUnsafeBufferPointer { cfs_lgetxattr(target, $0.baseAddress! + keyStart, nil, 0) }
                    guard needed >= 0 else { throw fail(path, Int32(-needed)) }
                    valueBuffer = Array(repeating: 0, count: max(needed, valueBuffer.count * 2))
                }
                do throws(TreeError) {
                    try inode.setXattr(key, Array(valueBuffer[0..<valueSize]), external: true)
                } catch {
                    throw ScanError(path: path, reason: .tree(error))
                }
            }
        }
    }

    private mutating func scanDirectory(_ directory: Inode, dirfd: Int32, name: UnsafePointer<CChar>, path: [UInt8]) throws(ScanError) {
        let fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw fail(path) }
        defer { close(fd) }
        let base = path.last == UInt8(ascii: "/") ? path : path + [UInt8(ascii: "/")]
        // Read the whole listing first: the shared buffer is reused by subdirectories.
        var children: [(name: [CChar], type: UInt8)] = []
        while true {
            let n = cfs_getdents64(fd, direntBuffer.baseAddress, direntBuffer.count)
            if n < 0 { throw fail(path, Int32(-n)) }
            if n == 0 { break }
            var offset = 0
            while offset < n {
                let record = UnsafeRawPointer(direntBuffer.baseAddress! + offset)
                offset += Int(cfs_dirent64_reclen(record))
                let name = cfs_dirent64_name(record)!
                let length = strlen(name)
                if name[0] == 0x2E && (length == 1 || (length == 2 && name[1] == 0x2E)) { continue }
                children.append((Array(UnsafeBufferPointer(start: name, count: length + 1)), cfs_dirent64_type(record)))
            }
        }
        for (childName, direntType) in children {
            let nameBytes = childName.dropLast().map { UInt8(bitPattern: $0) }
            let childPath = base + nameBytes
            var type = direntType
            if type == UInt8(DT_UNKNOWN) {
                var st = stat()
                guard fstatat(fd, childName, &st, AT_SYMLINK_NOFOLLOW) == 0 else { throw fail(childPath) }
                if (st.st_mode & S_IFMT) == S_IFDIR { type = UInt8(DT_DIR) }
            }
            if options.skipDevices && (type == UInt8(DT_BLK) || type == UInt8(DT_CHR)) { continue }
            let child = try childName.withUnsafeBufferPointer { (cName) throws(ScanError) in
                try load(dirfd: fd, name: cName.baseAddress!, path: childPath)
            }
            do throws(TreeError) {
                try directory.addEntry(nameBytes, child)
            } catch {
                throw ScanError(path: childPath, reason: .tree(error))
            }
            if child.isDirectory {
                try childName.withUnsafeBufferPointer { (cName) throws(ScanError) in
                    try scanDirectory(child, dirfd: fd, name: cName.baseAddress!, path: childPath)
                }
            }
        }
    }
}
