// The FUSE low-level operations, answering from the mapped image. Everything the
// handlers read is immutable after mounting, so they run on libfuse's worker threads
// without locks (only the pool of open backing files and the digest cache have one).
//
// What the kernel sees matches the reference composefs-fuse:
// - inode numbers are nids, except that the root is FUSE_ROOT_ID (1) and whatever
//   sits at nid 1 takes the root's nid instead, so the mapping stays one to one;
// - attributes come straight from the inode (compact inodes carry the image's build
//   time), and entries and attributes are cached for an hour;
// - devices numbered 0/0 (overlay whiteouts) are not found by lookup, and hidden from
//   listings; except, in format 2 images (where whiteouts are the user's, stored as they are),
//   in directories below the root: overlayfs lists those of a directory with one layer
//   straight from EROFS, and only the root merges layers (the object stores are layers too);
// - only user.* xattrs are visible, as to an unprivileged overlayfs user: the
//   trusted.overlay.* ones composefs adds for overlayfs never show, nor do other
//   trusted.* or security.* ones;
// - regular files are read from the image when inline and otherwise from the file
//   their redirect names below the base directory (spliced, never copied).
// Where it deliberately differs: an image's POSIX ACLs are served (and so enforced by
// the kernel) instead of being dropped; symlink targets stored outside the inode can
// be read; backing files are checked (size, and fs-verity digest where the kernel has
// one); and files open without a request (see "Files" below).

import CFuseShim
import ComposeFSBase
import EROFS
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

/// Entry and attribute cache lifetime handed to the kernel: the image never changes.
let cacheTimeout = 3600.0

final class Server: @unchecked Sendable {
    /// Keeps the image mapped.
    let image: MappedFile
    let view: ImageView
    /// O_PATH descriptor of the object directory, or -1 without one.
    let basedir: Int32
    let useACL: Bool
    let verifier: BackingFileVerifier
    let pool = DescriptorPool()
    /// Have the kernel send open and opendir requests even where it need not.
    let openRequests: Bool
    /// Whiteouts below the root are listed (format 2; see the top of the file).
    let listsWhiteouts: Bool

    init(image: MappedFile, view: ImageView, basedir: Int32, useACL: Bool, verifyDigests: Bool, openRequests: Bool) {
        self.image = image
        self.view = view
        self.basedir = basedir
        self.useACL = useACL
        self.openRequests = openRequests
        listsWhiteouts = view.composefsVersion >= 2
        verifier = BackingFileVerifier(computeMissing: verifyDigests)
    }

    @inline(__always)
    func nid(_ ino: fuse_ino_t) -> UInt64 {
        ino == UInt64(FUSE_ROOT_ID) ? view.rootNid : ino == view.rootNid ? UInt64(FUSE_ROOT_ID) : ino
    }

    /// The same swap both ways.
    @inline(__always)
    func ino(_ nid: UInt64) -> fuse_ino_t { self.nid(nid) }

    /// The inode at `nid` if it can be served (nil means EIO). The kernel takes an inode with
    /// a negative size or an unknown type for a bad one, and a bad root makes the whole mount
    /// unusable: such inodes are corrupt here.
    func inode(_ nid: UInt64) -> InodeInfo? {
        guard let inode = try? view.inode(nid), inode.size <= UInt64(Int64.max), FileMode.isValidType(inode.mode) else {
            return nil
        }
        return inode
    }
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
    // (A corrupt image may hold nanoseconds past a second.)
    let time = timespec(tv_sec: Int(truncatingIfNeeded: inode.mtime), tv_nsec: Int(min(inode.mtimeNsec, 999_999_999)))
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
    guard let name, let directory = s.inode(s.nid(parent)) else { return reply(req, error: EIO) }
    guard directory.isDirectory else { return reply(req, error: ENOTDIR) }
    let wanted = UnsafeRawBufferPointer(start: name, count: strlen(name))
    let found: UInt64?
    do { found = try s.view.lookup(directory, wanted) } catch { return reply(req, error: EIO) }
    guard let nid = found else { return reply(req, error: ENOENT) }
    let ino = s.ino(nid)
    guard ino != 0, let child = s.inode(nid) else { return reply(req, error: EIO) }
    if child.isWhiteout { return reply(req, error: ENOENT) }
    var entry = entryParam(child, ino: ino)
    fuse_reply_entry(req, &entry)
}

func doGetattr(_ req: fuse_req_t?, _ ino: fuse_ino_t) {
    let s = server!
    guard let inode = s.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    var st = stat()
    fillStat(&st, inode, ino: ino)
    fuse_reply_attr(req, &st, cacheTimeout)
}

func doOpendir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    if zeroMessageOpendir { return reply(req, error: ENOSYS) }
    let s = server!
    guard let fi, let inode = s.inode(s.nid(ino)) else { return reply(req, error: EIO) }
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
    guard let directory = s.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    guard directory.isDirectory else { return reply(req, error: ENOTDIR) }
    withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 16) { buffer in
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Linux.nameMax + 1) { name in
            var used = 0
            var corrupt = false
            let hidesWhiteouts = !s.listsWhiteouts || directory.nid == s.view.rootNid
            let walked = (try? s.view.forEachDirent(directory, from: Int(offset)) { entry in
                let childIno = s.ino(entry.nid)
                guard childIno != 0, entry.name.count <= Linux.nameMax else {
                    corrupt = true
                    return false
                }
                // A corrupt child is still listed (lookups of it fail), just without attributes.
                let child = plus || entry.fileType == EROFSFileType.characterDevice.rawValue ? s.inode(entry.nid) : nil
                let isWhiteout = entry.fileType == EROFSFileType.characterDevice.rawValue && child?.isWhiteout == true
                if isWhiteout && hidesWhiteouts {
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
                    var param = fuse_entry_param()
                    if let child, !isWhiteout {
                        param = entryParam(child, ino: childIno)
                    } else {
                        // Node 0: the kernel lists the name but makes no entry for it (a
                        // corrupt child, or a listed whiteout, which lookups do not find).
                        param.attr.st_ino = __ino_t(childIno)
                        param.attr.st_mode = modeOfFileType(entry.fileType)
                    }
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
            }) != nil
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
    guard let inode = s.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    guard inode.isSymlink else { return reply(req, error: EINVAL) }
    guard inode.size < UInt64(Linux.pathMax), let (blocks, tail) = try? s.view.dataRanges(inode) else {
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

/// Whether an xattr stored under prefix `index` with suffix `name` is shown: user.*,
/// and the POSIX ACLs when the image has them (and -o noacl was not given). The
/// trusted.* ones (the overlay xattrs among them) and security.* stay hidden, as in
/// the reference.
@inline(__always)
func isVisible(_ s: Server, index: UInt8, name: UnsafeRawBufferPointer) -> Bool {
    index == EROFSXattrPrefix.user || (s.useACL && isACLIndex(index) && name.isEmpty)
}

func doListxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int) {
    let s = server!
    guard let inode = s.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: max(size, 1)) { buffer in
        var total = 0
        var tooSmall = false
        let ok = (try? s.view.forEachXattr(inode) { record in
            guard isVisible(s, index: record.index, name: record.name) else { return true }
            let prefix = EROFSXattrPrefix.prefixes[Int(record.index)]
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
        }) != nil
        if !ok { return reply(req, error: EIO) }
        if tooSmall { return reply(req, error: ERANGE) }
        if size == 0 {
            fuse_reply_xattr(req, total)
        } else {
            buffer.withMemoryRebound(to: CChar.self) { _ = fuse_reply_buf(req, $0.baseAddress, total) }
        }
    }
}

let nfs4ACLName = Array("system.nfs4_acl".utf8)

@inline(__always)
func isACLIndex(_ index: UInt8) -> Bool { index == EROFSXattrPrefix.aclAccess || index == EROFSXattrPrefix.aclDefault }

func doGetxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: UnsafePointer<CChar>?, _ size: Int) {
    let s = server!
    guard let name, let inode = s.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    let fullName = UnsafeRawBufferPointer(start: name, count: strlen(name))
    let (index, suffixStart) = EROFSXattrPrefix.match(fullName, among: EROFSXattrPrefix.readable)
    let suffix = UnsafeRawBufferPointer(rebasing: fullName[suffixStart...])
    let isACL = (isACLIndex(index) && suffix.isEmpty) || (index == 0 && suffix.elementsEqual(nfs4ACLName))
    // Without ACLs in the image, say the file system has none, so callers stop asking.
    if isACL && !s.useACL { return reply(req, error: EOPNOTSUPP) }
    guard isVisible(s, index: index, name: suffix) else { return reply(req, error: ENODATA) }
    let found: UnsafeRawBufferPointer?
    do { found = try s.view.xattr(inode, index: index, name: suffix) } catch { return reply(req, error: EIO) }
    guard let value = found else { return reply(req, error: ENODATA) }
    if size == 0 {
        fuse_reply_xattr(req, value.count)
    } else if size < value.count {
        reply(req, error: ERANGE)
    } else {
        fuse_reply_buf(req, value.baseAddress?.assumingMemoryBound(to: CChar.self), value.count)
    }
}

// MARK: Files
//
// Where the kernel supports it (Linux 5.1+), files and directories are opened without
// a request at all: open and opendir answer ENOSYS once, and the kernel then opens
// everything itself with the page cache and the readdir cache kept, and sends no
// release. Reads then find the backing file by inode, through a small pool of open
// descriptors, so a small file costs one request instead of three; a missing or
// mismatching backing file fails its reads with EIO instead of the open.
// Older kernels (or -o open_requests) get the reference's behaviour: the backing file
// is opened (and checked) at open time and its descriptor is the file handle.

/// Set once in init, before any request: the kernel opens without asking us.
nonisolated(unsafe) var zeroMessageOpen = false
nonisolated(unsafe) var zeroMessageOpendir = false

/// File handles of explicitly opened files: 0 is "none" (zero-message opens), the
/// inline marker, or a backing descriptor plus one.
let inlineHandle = UInt64.max

func doOpen(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let s = server!
    guard let fi else { return reply(req, error: EIO) }
    let access = fi.pointee.flags & O_ACCMODE
    if access == O_WRONLY || access == O_RDWR { return reply(req, error: EROFS) }
    if zeroMessageOpen { return reply(req, error: ENOSYS) }
    guard let inode = s.inode(s.nid(ino)) else { return reply(req, error: EIO) }
    guard inode.isRegular else { return reply(req, error: EINVAL) }
    fi.pointee.keep_cache = 1
    switch backingFile(s, inode) {
    case let .failure(error):
        reply(req, error: error.code)
    case .success(nil):
        fi.pointee.fh = inlineHandle
        fuse_reply_open(req, fi)
    case let .success(fd?):
        fi.pointee.fh = UInt64(fd) + 1
        if fuse_reply_open(req, fi) != 0 {
            close(fd)  // The open was interrupted: no release will come.
        }
    }
}

/// The checked backing file of a regular inode, opened, or nil when its data is in
/// the image.
func backingFile(_ s: Server, _ inode: InodeInfo) -> Result<Int32?, Errno> {
    let found: UnsafeRawBufferPointer?
    do { found = try s.view.xattr(inode, index: EROFSXattrPrefix.trusted, name: OverlayXattr.redirectSuffix) } catch {
        return .failure(Errno(EIO))
    }
    guard let redirect = found else {
        // Inline content (or empty): a chunked file without a redirect has no data anywhere.
        return inode.isFlat || inode.size == 0 ? .success(nil) : .failure(Errno(EIO))
    }
    let fd: Int32
    switch openBackingFile(s, redirect) {
    case let .failure(error): return .failure(error)
    case let .success(opened): fd = opened
    }
    if let code = checkBackingFile(s, inode, fd) {
        close(fd)
        return .failure(Errno(code))
    }
    return .success(fd)
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
/// where the image records one, matches.
func checkBackingFile(_ s: Server, _ inode: InodeInfo, _ fd: Int32) -> Int32? {
    var st = stat()
    guard fstat(fd, &st) == 0 else { return errno }
    guard st.st_mode & S_IFMT == S_IFREG, UInt64(st.st_size) == inode.size else { return EIO }
    let value: UnsafeRawBufferPointer?
    do { value = try s.view.xattr(inode, index: EROFSXattrPrefix.trusted, name: OverlayXattr.metacopySuffix) } catch {
        return EIO
    }
    guard let value, let metacopy = OverlayMetacopy(decoding: value) else { return value == nil ? nil : EIO }
    guard !metacopy.digest.isEmpty else { return nil }
    // A digest no algorithm has cannot be checked: never serve the file unchecked.
    guard let expected = ObjectID(digest: metacopy.digest) else { return EIO }
    return s.verifier.verify(nid: inode.nid, fd: fd, st, expected: expected) ? nil : EIO
}

func doRelease(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    if let fi, fi.pointee.fh != inlineHandle, fi.pointee.fh != 0 {
        close(Int32(truncatingIfNeeded: fi.pointee.fh - 1))
    }
    reply(req, error: 0)
}

/// What a read or lseek works on: the inode's data in the image, or a backing file
/// descriptor (to give back to the pool when `pooled`).
enum FileData {
    case inline(InodeInfo)
    case backing(fd: Int32, nid: UInt64, pooled: Bool)
}

func fileData(_ s: Server, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) -> Result<FileData, Errno> {
    let handle = fi?.pointee.fh ?? 0
    let nid = s.nid(ino)
    if handle != 0 && handle != inlineHandle {
        return .success(.backing(fd: Int32(truncatingIfNeeded: handle - 1), nid: nid, pooled: false))
    }
    if handle == 0, let fd = s.pool.take(nid) {
        return .success(.backing(fd: fd, nid: nid, pooled: true))
    }
    guard let inode = s.inode(nid) else { return .failure(Errno(EIO)) }
    if handle == inlineHandle { return .success(.inline(inode)) }
    switch backingFile(s, inode) {
    case .failure:
        // Whatever went wrong with the backing file, the read is what fails.
        return .failure(Errno(EIO))
    case .success(nil):
        return .success(.inline(inode))
    case let .success(fd?):
        return .success(.backing(fd: fd, nid: nid, pooled: true))
    }
}

func doRead(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let s = server!
    switch fileData(s, ino, fi) {
    case let .failure(error):
        reply(req, error: error.code)
    case let .success(.backing(fd, nid, pooled)):
        cfs_fuse_reply_fd(req, fd, size, offset)
        if pooled { s.pool.put(nid, fd) }
    case let .success(.inline(inode)):
        replyInline(req, s, inode, size, offset)
    }
}

func replyInline(_ req: fuse_req_t?, _ s: Server, _ inode: InodeInfo, _ size: Int, _ offset: off_t) {
    if inode.size == 0 {
        fuse_reply_buf(req, nil, 0)
        return
    }
    guard let (blocks, tail) = try? s.view.dataRanges(inode) else { return reply(req, error: EIO) }
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

/// SEEK_DATA and SEEK_HOLE (the kernel handles the other kinds itself).
func doLseek(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ offset: off_t, _ whence: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
    let s = server!
    switch fileData(s, ino, fi) {
    case let .failure(error):
        reply(req, error: error.code)
    case let .success(.backing(fd, nid, pooled)):
        let result = lseek(fd, offset, whence)
        let code = errno
        if pooled { s.pool.put(nid, fd) }
        if result < 0 { reply(req, error: code) } else { fuse_reply_lseek(req, result) }
    case let .success(.inline(inode)):
        // One extent of data, no holes.
        let size = off_t(truncatingIfNeeded: inode.size)
        if offset < 0 || offset >= size {
            reply(req, error: ENXIO)
        } else {
            fuse_reply_lseek(req, whence == Linux.SEEK_DATA ? offset : size)
        }
    }
}

func doInit(_ conn: UnsafeMutablePointer<fuse_conn_info>?) {
    guard let conn else { return }
    let s = server!
    // As the reference, except for splicing requests in: nothing here is ever written,
    // so that would only add a copy through a pipe to every request.
    var want = UInt32(FUSE_CAP_CACHE_SYMLINKS | FUSE_CAP_EXPORT_SUPPORT | FUSE_CAP_SPLICE_WRITE)
    if s.useACL { want |= UInt32(FUSE_CAP_POSIX_ACL) }
    conn.pointee.want |= want & conn.pointee.capable
    zeroMessageOpen = !s.openRequests && conn.pointee.capable & UInt32(FUSE_CAP_NO_OPEN_SUPPORT) != 0
    zeroMessageOpendir = !s.openRequests && conn.pointee.capable & UInt32(FUSE_CAP_NO_OPENDIR_SUPPORT) != 0
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
    ops.lseek = { req, ino, offset, whence, fi in doLseek(req, ino, offset, whence, fi) }
    return ops
}
