// Random access to a composefs image by nid, for serving it: each request decodes only
// the inode, directory block or xattr it needs, straight from the mapped image, so
// mounting costs nothing however large the tree is.
//
// The image is untrusted. Every offset is checked against the mapping before it is
// read, and anything malformed comes back as nil (the caller answers EIO); no loop
// runs longer than the bytes it walks.

import EROFS

#if canImport(Glibc)
import Glibc
#endif

/// Why an image cannot be served at all (checked once, before mounting).
public struct ImageViewError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The decoded fixed part of one inode, with where its xattrs and inline data are.
struct InodeInfo {
    var nid: UInt64
    var mode: UInt32
    var nlink: UInt32
    var size: UInt64
    /// raw_blkaddr, rdev or chunk format, depending on the type.
    var union: UInt32
    var uid: UInt32
    var gid: UInt32
    var mtime: UInt64
    var mtimeNsec: UInt32
    var dataLayout: UInt16
    /// Image offset and length of the xattr area (0 length when there is none).
    var xattrStart: Int
    var xattrSize: Int
    /// Where inline (tail-packed) data starts: right after the xattr area.
    var tailStart: Int

    var fileType: UInt32 { mode & FileMode.typeMask }
    var isDirectory: Bool { fileType == FileMode.directory }
    var isRegular: Bool { fileType == FileMode.regular }
    var isSymlink: Bool { fileType == FileMode.symlink }
    var isDevice: Bool { fileType == FileMode.characterDevice || fileType == FileMode.blockDevice }
    /// A device numbered 0/0: overlayfs hides these, and so does the reference.
    var isWhiteout: Bool { isDevice && union == 0 }
    var isFlat: Bool {
        dataLayout == EROFSDataLayout.flatPlain.rawValue || dataLayout == EROFSDataLayout.flatInline.rawValue
    }
    var isTailPacked: Bool { dataLayout == EROFSDataLayout.flatInline.rawValue }
}

/// A contiguous piece of the image.
struct ByteRange {
    var start: Int
    var count: Int
}

/// One xattr entry: the EROFS prefix index, the stored name suffix and the value.
struct XattrRecord {
    var index: UInt8
    var name: UnsafeRawBufferPointer
    var value: UnsafeRawBufferPointer
}

/// One directory entry and where the next one starts (the readdir cookie).
struct DirentRecord {
    var name: UnsafeRawBufferPointer
    var nid: UInt64
    var fileType: UInt8
    var nextOffset: Int
}

struct ImageView: @unchecked Sendable {
    static let blockSize = EROFSConstants.blockSize
    static let direntSize = Dirent.size

    let image: UnsafeRawBufferPointer
    let metaStart: Int
    let sharedXattrStart: Int
    let rootNid: UInt64
    let buildTime: UInt64
    let buildTimeNsec: UInt32
    /// The composefs header says the image carries POSIX ACLs.
    let hasACL: Bool

    /// Checks what every request relies on: the headers, the areas they point at, and a
    /// root inode that is a directory.
    init(_ image: UnsafeRawBufferPointer) throws(ImageViewError) {
        let bytes = ByteReader(image)
        guard image.count >= EROFSConstants.blockSize else {
            throw ImageViewError("image is too small (\(image.count) bytes)")
        }
        let header: ComposefsHeader
        let superblock: Superblock
        do {
            header = try ComposefsHeader(decoding: bytes)
            superblock = try Superblock(decoding: ByteReader(bytes.slice(at: EROFSConstants.superblockOffset, count: Superblock.size)))
        } catch {
            throw ImageViewError("truncated image header")
        }
        guard header.magic == ComposefsHeader.magic else { throw ImageViewError("not a composefs image (wrong magic)") }
        guard header.version == ComposefsHeader.headerVersion else {
            throw ImageViewError("unsupported composefs header version \(header.version)")
        }
        guard superblock.magic == EROFSConstants.superMagic else {
            throw ImageViewError("not an EROFS image (wrong superblock magic)")
        }
        guard superblock.blockSizeBits == UInt8(EROFSConstants.blockSizeBits) else {
            throw ImageViewError("unsupported EROFS block size 2^\(superblock.blockSizeBits)")
        }
        self.image = image
        metaStart = Int(superblock.metaBlockAddress) * Self.blockSize
        sharedXattrStart = Int(superblock.xattrBlockAddress) * Self.blockSize
        guard metaStart < image.count else { throw ImageViewError("inode area is past the end of the image") }
        rootNid = UInt64(superblock.rootNid)
        buildTime = superblock.buildTime
        buildTimeNsec = superblock.buildTimeNsec
        hasACL = header.flags & ComposefsHeader.flagHasACL != 0
        guard let root = inode(rootNid) else { throw ImageViewError("root inode \(rootNid) is corrupt") }
        guard root.isDirectory else { throw ImageViewError("root inode \(rootNid) is not a directory") }
    }

    // MARK: Raw reads

    @inline(__always)
    func contains(_ start: Int, _ count: Int) -> Bool {
        start >= 0 && count >= 0 && start <= image.count && count <= image.count - start
    }

    @inline(__always)
    func bytes(_ range: ByteRange) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: image.baseAddress! + range.start, count: range.count)
    }

    @inline(__always) func u8(_ offset: Int) -> UInt8 { image[offset] }
    @inline(__always) func u16(_ offset: Int) -> UInt16 {
        UInt16(littleEndian: image.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inline(__always) func u32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: image.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    @inline(__always) func u64(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: image.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    // MARK: Inodes

    /// The inode at `nid`, or nil when it does not fit the image.
    func inode(_ nid: UInt64) -> InodeInfo? {
        let slots = UInt64((image.count - metaStart) >> EROFSConstants.slotSizeBits)
        guard nid < slots else { return nil }
        let offset = metaStart + Int(nid) << EROFSConstants.slotSizeBits
        guard contains(offset, InodeHeader.compactSize) else { return nil }
        let format = u16(offset)
        let extended = format & 1 == 1
        let headerSize = extended ? InodeHeader.extendedSize : InodeHeader.compactSize
        guard contains(offset, headerSize) else { return nil }
        let xattrCount = u16(offset + 2)
        var info = InodeInfo(
            nid: nid, mode: UInt32(u16(offset + 4)), nlink: 0, size: 0, union: u32(offset + 16), uid: 0, gid: 0,
            mtime: buildTime, mtimeNsec: buildTimeNsec, dataLayout: (format >> 1) & 0x7,
            xattrStart: offset + headerSize, xattrSize: XattrBodyHeader.bodySize(inodeCount: xattrCount), tailStart: 0)
        if extended {
            info.size = u64(offset + 8)
            info.uid = u32(offset + 24)
            info.gid = u32(offset + 28)
            info.mtime = u64(offset + 32)
            info.mtimeNsec = u32(offset + 40)
            info.nlink = u32(offset + 44)
        } else {
            info.nlink = UInt32(u16(offset + 6))
            info.size = UInt64(u32(offset + 8))
            info.uid = UInt32(u16(offset + 24))
            info.gid = UInt32(u16(offset + 26))
        }
        guard contains(info.xattrStart, info.xattrSize) else { return nil }
        // The kernel takes an inode with a negative size (or an unknown type) for a bad
        // one, and a bad root makes the whole mount unusable: report it as corrupt here.
        guard info.size <= UInt64(Int64.max), FileMode.isValidType(info.mode) else { return nil }
        info.tailStart = info.xattrStart + info.xattrSize
        return info
    }

    /// Where a flat inode's data is: whole blocks at raw_blkaddr, then (tail-packed
    /// layout) the remainder inline after the inode. Nil when it is not flat or does
    /// not fit the image.
    func dataRanges(_ inode: InodeInfo) -> (blocks: ByteRange, tail: ByteRange)? {
        guard inode.isFlat, inode.size <= UInt64(image.count) else { return nil }
        let size = Int(inode.size)
        let blockBytes = inode.isTailPacked ? size / Self.blockSize * Self.blockSize : size
        let blocks = ByteRange(start: blockBytes == 0 ? 0 : Int(inode.union) * Self.blockSize, count: blockBytes)
        let tail = ByteRange(start: inode.tailStart, count: size - blockBytes)
        guard contains(blocks.start, blocks.count), contains(tail.start, tail.count) else { return nil }
        return (blocks, tail)
    }

    // MARK: Directories

    /// The pieces of a directory's data, each a self-contained run of dirents and
    /// names: every full block, then the inline tail. Piece `k` holds the cookies
    /// from `k * blockSize`.
    struct DirectoryLayout {
        var blocks: ByteRange
        var tail: ByteRange
        var pieceCount: Int { (blocks.count + ImageView.blockSize - 1) / ImageView.blockSize + (tail.count > 0 ? 1 : 0) }
        var blockPieces: Int { (blocks.count + ImageView.blockSize - 1) / ImageView.blockSize }

        func piece(_ k: Int) -> ByteRange {
            if k < blockPieces {
                let start = k * ImageView.blockSize
                return ByteRange(start: blocks.start + start, count: min(ImageView.blockSize, blocks.count - start))
            }
            return tail
        }
    }

    func directoryLayout(_ inode: InodeInfo) -> DirectoryLayout? {
        guard inode.isDirectory, let (blocks, tail) = dataRanges(inode) else { return nil }
        return DirectoryLayout(blocks: blocks, tail: tail)
    }

    /// The number of dirents in a piece, or nil if its header is malformed.
    func direntCount(_ piece: ByteRange) -> Int? {
        guard piece.count >= Self.direntSize else { return nil }
        let namesStart = Int(u16(piece.start + 8))
        guard namesStart >= Self.direntSize, namesStart % Self.direntSize == 0, namesStart <= piece.count else {
            return nil
        }
        return namesStart / Self.direntSize
    }

    /// Dirent `i` of a piece holding `count`: its name (up to a NUL) and nid.
    func dirent(_ piece: ByteRange, _ i: Int, of count: Int) -> (name: UnsafeRawBufferPointer, nid: UInt64, type: UInt8)? {
        let at = piece.start + i * Self.direntSize
        let nameStart = Int(u16(at + 8))
        let nameEnd = i + 1 < count ? Int(u16(at + Self.direntSize + 8)) : piece.count
        guard count * Self.direntSize <= nameStart, nameStart < nameEnd, nameEnd <= piece.count else { return nil }
        var name = UnsafeRawBufferPointer(start: image.baseAddress! + piece.start + nameStart, count: nameEnd - nameStart)
        if let nul = name.firstIndex(of: 0) {
            guard nul > 0 else { return nil }
            name = UnsafeRawBufferPointer(rebasing: name[..<nul])
        }
        return (name, u64(at), u8(at + 10))
    }

    enum LookupResult {
        case found(UInt64)
        case notFound
        case corrupt
    }

    /// Binary search of the sorted entries (".", ".." included), first over pieces
    /// then within one.
    func lookup(_ directory: InodeInfo, _ name: UnsafeRawBufferPointer) -> LookupResult {
        guard let layout = directoryLayout(directory) else { return .corrupt }
        var low = 0
        var high = layout.pieceCount - 1
        while low <= high {
            let mid = low + (high - low) / 2
            let piece = layout.piece(mid)
            guard let count = direntCount(piece) else { return .corrupt }
            guard let first = dirent(piece, 0, of: count) else { return .corrupt }
            let c = compare(name, first.name)
            if c == 0 { return .found(first.nid) }
            if c < 0 {
                high = mid - 1
                continue
            }
            guard let last = dirent(piece, count - 1, of: count) else { return .corrupt }
            let d = compare(name, last.name)
            if d == 0 { return .found(last.nid) }
            if d > 0 {
                low = mid + 1
                continue
            }
            // Between this piece's first and last entries: here or nowhere.
            var lo = 1
            var hi = count - 2
            while lo <= hi {
                let m = lo + (hi - lo) / 2
                guard let entry = dirent(piece, m, of: count) else { return .corrupt }
                let e = compare(name, entry.name)
                if e == 0 { return .found(entry.nid) }
                if e < 0 { hi = m - 1 } else { lo = m + 1 }
            }
            return .notFound
        }
        return .notFound
    }

    /// Calls `body` for each entry from the cookie `offset` on (0 is the start), until
    /// it returns false. Returns false if the directory is malformed.
    func forEachDirent(_ directory: InodeInfo, from offset: Int, _ body: (DirentRecord) -> Bool) -> Bool {
        guard offset >= 0, let layout = directoryLayout(directory) else { return false }
        var k = offset / Self.blockSize
        // Round a cookie inside a piece up to a dirent boundary, as the reference does.
        var i = (offset % Self.blockSize + Self.direntSize - 1) / Self.direntSize
        while k < layout.pieceCount {
            let piece = layout.piece(k)
            guard let count = direntCount(piece) else { return false }
            while i < count {
                guard let entry = dirent(piece, i, of: count) else { return false }
                let next = i + 1 < count ? k * Self.blockSize + (i + 1) * Self.direntSize : (k + 1) * Self.blockSize
                if !body(DirentRecord(name: entry.name, nid: entry.nid, fileType: entry.type, nextOffset: next)) {
                    return true
                }
                i += 1
            }
            k += 1
            i = 0
        }
        return true
    }

    // MARK: Xattrs

    /// Calls `body` for each xattr, inline ones first, until it returns false.
    /// Returns false if the xattr area is malformed.
    func forEachXattr(_ inode: InodeInfo, _ body: (XattrRecord) -> Bool) -> Bool {
        guard inode.xattrSize > 0 else { return true }
        guard inode.xattrSize >= XattrBodyHeader.size else { return false }
        let start = inode.xattrStart
        let end = start + inode.xattrSize
        let sharedCount = Int(u8(start + 4))
        var position = start + XattrBodyHeader.size + sharedCount * 4
        guard position <= end else { return false }
        while position < end {
            guard let (record, length) = xattrEntry(at: position, limit: end) else { return false }
            if !body(record) { return true }
            position += length
        }
        for i in 0..<sharedCount {
            let id = Int(u32(start + XattrBodyHeader.size + i * 4))
            guard let (record, _) = xattrEntry(at: sharedXattrStart + id * 4, limit: image.count) else { return false }
            if !body(record) { return true }
        }
        return true
    }

    private func xattrEntry(at offset: Int, limit: Int) -> (XattrRecord, Int)? {
        guard offset >= 0, offset <= limit - XattrEntry.headerSize else { return nil }
        let nameLength = Int(u8(offset))
        let valueLength = Int(u16(offset + 2))
        let nameStart = offset + XattrEntry.headerSize
        guard nameLength + valueLength <= limit - nameStart else { return nil }
        let base = image.baseAddress!
        let record = XattrRecord(
            index: u8(offset + 1),
            name: UnsafeRawBufferPointer(start: base + nameStart, count: nameLength),
            value: UnsafeRawBufferPointer(start: base + nameStart + nameLength, count: valueLength))
        return (record, XattrEntry.encodedSize(suffixLength: nameLength, valueLength: valueLength))
    }

    /// The value of the xattr stored under prefix `index` with suffix `name`.
    /// `.some(nil)` when absent, nil when the area is malformed.
    func xattr(_ inode: InodeInfo, index: UInt8, name: [UInt8]) -> UnsafeRawBufferPointer?? {
        var found: UnsafeRawBufferPointer?
        let ok = name.withUnsafeBytes { wanted in
            forEachXattr(inode) { record in
                if record.index == index && compare(record.name, wanted) == 0 {
                    found = record.value
                    return false
                }
                return true
            }
        }
        return ok ? .some(found) : nil
    }
}

/// memcmp order, shorter first on a common prefix (strcmp on unterminated names).
@inline(__always)
func compare(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let n = min(a.count, b.count)
    if n > 0 {
        let c = memcmp(a.baseAddress!, b.baseAddress!, n)
        if c != 0 { return Int(c) }
    }
    return a.count - b.count
}
