// The FUSE low-level operations, answering from the mapped image. Everything the
// handlers read is immutable after mounting, so they run on libfuse's worker threads
// without locks (only the digest cache of backing files has one).
//
// What the kernel sees matches the reference composefs-fuse:
// - inode numbers are nids, except that the root is FUSE_ROOT_ID (1) and whatever
//   sits at nid 1 takes the root's nid instead, so the mapping stays one to one;
// - attributes come straight from the inode (compact inodes carry the image's build
//   time), and entries and attributes are cached for an hour;
// - devices numbered 0/0 (overlay whiteouts) are hidden;
// - only user.* xattrs are visible, as to an unprivileged overlayfs user; the
//   trusted.overlay.* ones composefs adds for overlayfs never show;
// - regular files are read from the image when inline and otherwise from the file
//   their redirect names below the base directory (spliced, never copied).

import CFuseShim
import EROFS
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

/// Entry and attribute cache lifetime handed to the kernel: the image never changes.
let cacheTimeout = 3600.0

/// The file handle of a file served from the image itself.
let inlineHandle = UInt64.max

final class Server: @unchecked Sendable {
    let view: ImageView
    /// O_PATH descriptor of the object directory, or -1 without one.
    let basedir: Int32
    let useACL: Bool
    let verifier: BackingFileVerifier

    init(view: ImageView, basedir: Int32, useACL: Bool, verifyDigests: Bool) {
        self.view = view
        self.basedir = basedir
        self.useACL = useACL
        verifier = BackingFileVerifier(computeMissing: verifyDigests)
    }

    @inline(__always)
    func nid(_ ino: fuse_ino_t) -> UInt64 {
        ino == UInt64(FUSE_ROOT_ID) ? view.rootNid : ino == view.rootNid ? UInt64(FUSE_ROOT_ID) : ino
    }

    /// The same swap both ways.
    @inline(__always)
    func ino(_ nid: UInt64) -> fuse_ino_t { self.nid(nid) }
}

nonisolated(unsafe) var server: Server!

// MARK: Attributes

func fillStat(_ st: inout stat, _ inode: InodeInfo, ino: fuse_ino_t) {
    st = stat()
    st.st_ino = __ino_t(ino)
    st.st_mode = inode.mode
    st.st_nlink = __nlink_t(inode.nlink)
    st.st_size = __off_t(truncatingIfNeeded: inode.size)
    st.st_uid = inode.uid
    st.st_gid = inode.gid
    if inode.isDevice { st.st_rdev = __dev_t(inode.union) }
    let time = timespec(tv_sec: Int(truncatingIfNeeded: inode.mtime), tv_nsec: Int(inode.mtimeNsec))
    st.st_mtim = time
    st.st_atim = time
    st.st_ctim = time
}

func entryParam(_ inode: InodeInfo, ino: fuse_ino_t) -> fuse_entry_param {
    var entry = fuse_entry_param()
    entry.ino = ino
    entry.attr_timeout = cacheTimeout
    entry.entry_timeout = cacheTimeout
    fillStat(&entry.attr, inode, ino: ino)
    return entry
}

// MARK: Handlers

func doLookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: UnsafePointer<CChar>?) {
    let s = server!
    guard let name, let directory = s.view.inode(s.nid(parent)) else { return reply(req, error: EIO) }
    guard directory.isDirectory else { return reply(req, error: ENOTDIR) }
    let wanted = UnsafeRawBufferPointer(start: name, count: strlen(name))
    switch s.view.lookup(directory, wanted) {
    case .corrupt:
        reply(req, error: EIO)
    case .notFound:
        reply(req, error: ENOENT)
    case let .found(nid):
        let ino = s.ino(nid)
        guard ino != 0, let child = s.view.inode(nid) else { return reply(req, error: EIO) }
        if child.isWhiteout { return reply(req, error: ENOENT) }
        var entry = entryParam(child, ino: ino)
        fuse_reply_entry(req, &entry)
    }
}

func doGetattr(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
    let s = server!
    guard let inode = s.view.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    var st = stat()
    fillStat(&st, inode, ino: ino)
    fuse_reply_attr(req, &st, cacheTimeout)
}

func doOpendir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let s = server!
    guard let fi, let inode = s.view.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    guard inode.isDirectory else { return reply(req, error: ENOTDIR) }
    fi.pointee.keep_cache = 1
    fi.pointee.cache_readdir = 1
    fuse_reply_open(req, fi)
}

/// The st_mode type bits for a dirent's EROFS file type.
func modeOfFileType(_ type: UInt8) -> UInt32 {
    switch EROFSFileType(rawValue: type) {
    case .regular?: return FileMode.regular
    case .directory?: return FileMode.directory
    case .characterDevice?: return FileMode.characterDevice
    case .blockDevice?: return FileMode.blockDevice
    case .fifo?: return FileMode.fifo
    case .socket?: return FileMode.socket
    case .symlink?: return FileMode.symlink
    default: return 0
    }
}

func doReaddir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, plus: Bool) {
    let s = server!
    guard let directory = s.view.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    guard directory.isDirectory else { return reply(req, error: ENOTDIR) }
    withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 16) { buffer in
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Linux.nameMax + 1) { name in
            var used = 0
            var corrupt = false
            let walked = s.view.forEachDirent(directory, from: Int(offset)) { entry in
                let childIno = s.ino(entry.nid)
                guard childIno != 0, entry.name.count <= Linux.nameMax else {
                    corrupt = true
                    return false
                }
                var child: InodeInfo?
                if plus || entry.fileType == EROFSFileType.characterDevice.rawValue {
                    child = s.view.inode(entry.nid)
                    guard child != nil else {
                        corrupt = true
                        return false
                    }
                }
                if entry.fileType == EROFSFileType.characterDevice.rawValue, child!.isWhiteout {
                    return true  // hidden, but its cookie is consumed
                }
                entry.name.withMemoryRebound(to: CChar.self) { bytes in
                    _ = UnsafeMutableBufferPointer(rebasing: name[..<bytes.count]).initialize(from: bytes)
                }
                name[entry.name.count] = 0
                let room = size - used
                let destination = buffer.baseAddress!.assumingMemoryBound(to: CChar.self) + used
                let needed: Int
                if plus {
                    var param = entryParam(child!, ino: childIno)
                    needed = fuse_add_direntry_plus(req, destination, room, name.baseAddress, &param, off_t(entry.nextOffset))
                } else {
                    var st = stat()
                    st.st_ino = __ino_t(childIno)
                    st.st_mode = modeOfFileType(entry.fileType)
                    needed = fuse_add_direntry(req, destination, room, name.baseAddress, &st, off_t(entry.nextOffset))
                }
                guard needed <= room else { return false }
                used += needed
                return true
            }
            if (!walked || corrupt) && used == 0 {
                reply(req, error: EIO)
            } else {
                fuse_reply_buf(req, buffer.baseAddress!.assumingMemoryBound(to: CChar.self), used)
            }
        }
    }
}

func doReadlink(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
    let s = server!
    guard let inode = s.view.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    guard inode.isSymlink else { return reply(req, error: EINVAL) }
    guard inode.size < UInt64(Linux.pathMax), let (blocks, tail) = s.view.dataRanges(inode) else {
        return reply(req, error: EIO)
    }
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Linux.pathMax) { target in
        let head = s.view.bytes(blocks)
        let rest = s.view.bytes(tail)
        _ = UnsafeMutableBufferPointer(rebasing: target[..<head.count]).initialize(from: head)
        _ = UnsafeMutableBufferPointer(rebasing: target[head.count..<head.count + rest.count]).initialize(from: rest)
        target[head.count + rest.count] = 0
        target.withMemoryRebound(to: CChar.self) { _ = fuse_reply_readlink(req, $0.baseAddress) }
    }
}

// MARK: Xattrs

/// The EROFS prefix index of user.* names, the only ones shown.
let userXattrIndex: UInt8 = 1
let trustedXattrIndex: UInt8 = 4

func doListxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int) {
    let s = server!
    guard let inode = s.view.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    let prefix = EROFSXattrPrefix.prefixes[Int(userXattrIndex)]
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(size, 1)) { buffer in
        var total = 0
        var tooSmall = false
        let ok = s.view.forEachXattr(inode) { record in
            guard record.index == userXattrIndex else { return true }
            let length = prefix.count + record.name.count + 1
            if size > 0 {
                guard length <= size - total else {
                    tooSmall = true
                    return false
                }
                var at = total
                for byte in prefix {
                    buffer[at] = byte
                    at += 1
                }
                for byte in record.name {
                    buffer[at] = byte
                    at += 1
                }
                buffer[at] = 0
            }
            total += length
            return true
        }
        if !ok { return reply(req, error: EIO) }
        if tooSmall { return reply(req, error: ERANGE) }
        if size == 0 {
            fuse_reply_xattr(req, total)
        } else {
            buffer.withMemoryRebound(to: CChar.self) { _ = fuse_reply_buf(req, $0.baseAddress, total) }
        }
    }
}

/// Splits a full xattr name into the EROFS prefix index and the rest, taking the
/// first prefix that matches (index 0 and the whole name when none does).
func splitXattrName(_ name: UnsafeRawBufferPointer) -> (index: UInt8, suffix: UnsafeRawBufferPointer) {
    for index in 1..<EROFSXattrPrefix.prefixes.count {
        let prefix = EROFSXattrPrefix.prefixes[index]
        if name.count >= prefix.count && name.prefix(prefix.count).elementsEqual(prefix) {
            return (UInt8(index), UnsafeRawBufferPointer(rebasing: name[prefix.count...]))
        }
    }
    return (0, name)
}

let nfs4ACLName = Array("system.nfs4_acl".utf8)

func doGetxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
    let s = server!
    guard let name, let inode = s.view.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    let (index, suffix) = splitXattrName(UnsafeRawBufferPointer(start: name, count: strlen(name)))
    let isACL = ((index == 2 || index == 3) && suffix.isEmpty) || (index == 0 && suffix.elementsEqual(nfs4ACLName))
    // Without ACLs in the image, say the file system has none, so callers stop asking.
    if isACL && !s.useACL { return reply(req, error: EOPNOTSUPP) }
    guard index == userXattrIndex else { return reply(req, error: ENODATA) }
    var value: UnsafeRawBufferPointer?
    let ok = s.view.forEachXattr(inode) { record in
        if record.index == index && compare(record.name, suffix) == 0 {
            value = record.value
            return false
        }
        return true
    }
    guard ok else { return reply(req, error: EIO) }
    guard let value else { return reply(req, error: ENODATA) }
    if size == 0 {
        fuse_reply_xattr(req, value.count)
    } else if size < value.count {
        reply(req, error: ERANGE)
    } else {
        fuse_reply_buf(req, value.baseAddress?.assumingMemoryBound(to: CChar.self), value.count)
    }
}

// MARK: Files

let redirectName = Array("overlay.redirect".utf8)
let metacopyName = Array("overlay.metacopy".utf8)

func doOpen(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let s = server!
    guard let fi else { return reply(req, error: EIO) }
    let access = fi.pointee.flags & O_ACCMODE
    if access == O_WRONLY || access == O_RDWR { return reply(req, error: EROFS) }
    guard let inode = s.view.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    guard inode.isRegular else { return reply(req, error: EINVAL) }
    guard let redirect = s.view.xattr(inode, index: trustedXattrIndex, name: redirectName) else {
        return reply(req, error: EIO)
    }
    fi.pointee.keep_cache = 1
    guard let redirect else {
        // Inline content (or empty): served from the image.
        guard inode.isFlat || inode.size == 0 else { return reply(req, error: EIO) }
        fi.pointee.fh = inlineHandle
        fuse_reply_open(req, fi)
        return
    }
    let fd: Int32
    switch openBackingFile(s, redirect) {
    case let .failure(error): return reply(req, error: error.code)
    case let .success(opened): fd = opened
    }
    if let code = checkBackingFile(s, inode, fd) {
        close(fd)
        return reply(req, error: code)
    }
    fi.pointee.fh = UInt64(fd)
    if fuse_reply_open(req, fi) != 0 {
        close(fd)  // The open was interrupted: no release will come.
    }
}

/// Opens the object a redirect names, confined to the base directory.
func openBackingFile(_ s: Server, _ redirect: UnsafeRawBufferPointer) -> Result<Int32, Errno> {
    guard s.basedir >= 0 else { return .failure(Errno(ENOENT)) }
    var path = Array(redirect)
    if let nul = path.firstIndex(of: 0) { path.removeSubrange(nul...) }
    let leading = path.firstIndex(where: { $0 != UInt8(ascii: "/") }) ?? path.count
    path.removeSubrange(..<leading)
    guard !path.isEmpty else { return .failure(Errno(EIO)) }
    path.append(0)
    let fd = path.withUnsafeBufferPointer {
        $0.withMemoryRebound(to: CChar.self) { cfs_open_beneath(s.basedir, $0.baseAddress) }
    }
    if fd < 0 {
        // EXDEV: the path tried to leave the base directory.
        return .failure(Errno(-fd == EXDEV ? EIO : -fd))
    }
    return .success(fd)
}

/// EIO unless the backing file is a regular file of the inode's size whose digest,
/// where known, matches the image.
func checkBackingFile(_ s: Server, _ inode: InodeInfo, _ fd: Int32) -> Int32? {
    var st = stat()
    guard fstat(fd, &st) == 0 else { return errno }
    guard st.st_mode & S_IFMT == S_IFREG, UInt64(st.st_size) == inode.size else { return EIO }
    guard let metacopy = s.view.xattr(inode, index: trustedXattrIndex, name: metacopyName) else { return EIO }
    guard let metacopy, metacopy.count == 4 + Linux.sha256DigestSize else { return nil }
    let expected = UnsafeRawBufferPointer(rebasing: metacopy[4...])
    return s.verifier.verify(nid: inode.nid, fd: fd, st, expected: expected) ? nil : EIO
}

func doRelease(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    if let fi, fi.pointee.fh != inlineHandle { close(Int32(truncatingIfNeeded: fi.pointee.fh)) }
    reply(req, error: 0)
}

func doRead(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let fi else { return reply(req, error: EIO) }
    if fi.pointee.fh != inlineHandle {
        cfs_fuse_reply_fd(req, Int32(truncatingIfNeeded: fi.pointee.fh), size, offset)
        return
    }
    let s = server!
    guard let inode = s.view.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    if inode.size == 0 {
        fuse_reply_buf(req, nil, 0)
        return
    }
    guard let (blocks, tail) = s.view.dataRanges(inode) else { return reply(req, error: EIO) }
    // Up to two pieces: the part of [offset, offset + size) in the blocks, then in the tail.
    var iov = (iovec(), iovec())
    var count: Int32 = 0
    var position = max(Int(offset), 0)
    var remaining = size
    let base = UnsafeMutableRawPointer(mutating: s.view.image.baseAddress!)
    func take(_ range: ByteRange, from logicalStart: Int) {
        guard remaining > 0, position >= logicalStart, position < logicalStart + range.count else { return }
        let within = position - logicalStart
        let length = min(remaining, range.count - within)
        let piece = iovec(iov_base: base + range.start + within, iov_len: length)
        if count == 0 { iov.0 = piece } else { iov.1 = piece }
        count += 1
        position += length
        remaining -= length
    }
    take(blocks, from: 0)
    take(tail, from: blocks.count)
    withUnsafePointer(to: &iov) {
        $0.withMemoryRebound(to: iovec.self, capacity: 2) { _ = fuse_reply_iov(req, $0, count) }
    }
}

func doLseek(_ req: fuse_req_t?, _ offset: off_t, _ whence: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    guard let fi else { return reply(req, error: EIO) }
    if fi.pointee.fh == inlineHandle {
        // As the reference: the image's inline files are one hole-free extent at 0.
        if offset > 0 || whence == Linux.SEEK_DATA {
            reply(req, error: ENXIO)
        } else {
            fuse_reply_lseek(req, 0)
        }
        return
    }
    let result = lseek(Int32(truncatingIfNeeded: fi.pointee.fh), offset, whence)
    if result < 0 { reply(req, error: errno) } else { fuse_reply_lseek(req, result) }
}

func doInit(_ conn: UnsafeMutablePointer<fuse_conn_info>?) {
    guard let conn else { return }
    let s = server!
    var want = UInt32(FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_READ)
    if s.useACL { want |= UInt32(FUSE_CAP_POSIX_ACL) }
    conn.pointee.want |= want & conn.pointee.capable
}

@inline(__always)
func reply(_ req: fuse_req_t?, error code: Int32) {
    fuse_reply_err(req, code)
}

/// Constants Swift's Glibc module leaves out (they need _GNU_SOURCE), and limits.
enum Linux {
    static let O_PATH: Int32 = 0o10000000
    static let SEEK_DATA: Int32 = 3
    static let nameMax = EROFSConstants.maxNameLength
    static let pathMax = 4096
    static let sha256DigestSize = 32
}

/// An errno value as an Error, for Result.
struct Errno: Error {
    var code: Int32
    init(_ code: Int32) { self.code = code }
}

func makeOperations() -> fuse_lowlevel_ops {
    var ops = fuse_lowlevel_ops()
    ops.`init` = { _, conn in doInit(conn) }
    ops.lookup = { req, parent, name in doLookup(req, parent, name) }
    ops.getattr = { req, ino, _ in doGetattr(req, ino) }
    ops.opendir = { req, ino, fi in doOpendir(req, ino, fi) }
    ops.readdir = { req, ino, size, offset, _ in doReaddir(req, ino, size, offset, plus: false) }
    ops.readdirplus = { req, ino, size, offset, _ in doReaddir(req, ino, size, offset, plus: true) }
    ops.readlink = { req, ino in doReadlink(req, ino) }
    ops.listxattr = { req, ino, size in doListxattr(req, ino, size) }
    ops.getxattr = { req, ino, name, size in doGetxattr(req, ino, name, size) }
    ops.open = { req, ino, fi in doOpen(req, ino, fi) }
    ops.release = { req, _, fi in doRelease(req, fi) }
    ops.read = { req, ino, size, offset, fi in doRead(req, ino, size, offset, fi) }
    ops.lseek = { req, _, offset, whence, fi in doLseek(req, offset, whence, fi) }
    return ops
}
