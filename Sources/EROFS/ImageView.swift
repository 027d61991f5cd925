// Random access to a composefs EROFS image: an inode by nid, a directory's entries, an inode's
// xattrs and data, each decoded on demand straight from the image's bytes. The image reader
// (whole trees) and composefs-fuse (one request at a time) both read through this view.
//
// The image is untrusted. Every offset is checked before it is read and anything malformed
// is an error naming the inode and what is wrong; no loop runs longer than the bytes it walks.

import ComposeFSBase

/// Why an image (or a part of it) cannot be read.
public enum ImageFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The image is malformed.
    case invalid(String)
    /// The image is well formed but uses something this implementation does not support.
    case unsupported(String)

    public var description: String {
        switch self {
        case let .invalid(message), let .unsupported(message): message
        }
    }
}

/// A contiguous piece of the image.
public struct ByteRange: Equatable, Sendable {
    public var start: Int
    public var count: Int
}

/// The fixed part of one inode, decoded, with where its xattrs and inline data are.
public struct InodeInfo: Sendable {
    public var nid: UInt64
    public var header: InodeHeader
    /// Image offset and length of the xattr area (0 length when there is none).
    public var xattrStart: Int
    public var xattrSize: Int

    public var mode: UInt32 { UInt32(header.mode) }
    public var size: UInt64 { header.size }
    public var nlink: UInt32 { header.nlink }
    public var uid: UInt32 { header.uid }
    public var gid: UInt32 { header.gid }
    public var mtime: UInt64 { header.mtime }
    public var mtimeNsec: UInt32 { header.mtimeNsec }
    /// i_u: raw_blkaddr, rdev or chunk format, depending on the type.
    public var union: UInt32 { header.union }
    /// Where inline (tail-packed) data starts: right after the xattr area.
    public var tailStart: Int { xattrStart + xattrSize }

    public var fileType: UInt32 { mode & FileMode.typeMask }
    public var isDirectory: Bool { fileType == FileMode.directory }
    public var isRegular: Bool { fileType == FileMode.regular }
    public var isSymlink: Bool { fileType == FileMode.symlink }
    public var isDevice: Bool { fileType == FileMode.characterDevice || fileType == FileMode.blockDevice }
    /// A device numbered 0/0: an overlayfs whiteout.
    public var isWhiteout: Bool { isDevice && union == 0 }
    public var layout: EROFSDataLayout? { EROFSDataLayout(rawValue: header.dataLayout) }
    public var isFlat: Bool { layout == .flatPlain || layout == .flatInline }
}

/// One xattr entry: the prefix index, the stored name suffix and the value.
public struct XattrRecord {
    public var index: UInt8
    public var name: UnsafeRawBufferPointer
    public var value: UnsafeRawBufferPointer
}

/// One directory entry and where the next one starts (a readdir cookie).
public struct DirentRecord {
    /// Up to a NUL, if there is one.
    public var name: UnsafeRawBufferPointer
    public var nid: UInt64
    public var fileType: UInt8
    public var nextOffset: Int
}

public struct ImageView: @unchecked Sendable {
    static let blockSize = EROFSConstants.blockSize

    public let image: UnsafeRawBufferPointer
    let reader: ByteReader
    public let header: ComposefsHeader
    public let superblock: Superblock
    /// Where nid 0 is, and the shared xattr area.
    public let metaStart: Int
    public let sharedXattrStart: Int

    public var rootNid: UInt64 { UInt64(superblock.rootNid) }
    /// The composefs format version: 0 and 1 escape whiteouts and add the 00..ff stubs to
    /// the root, 2 (composefs-rs's) stores whiteouts as they are.
    public var composefsVersion: UInt32 { header.composefsVersion }
    /// The composefs header says the image carries POSIX ACLs.
    public var hasACL: Bool { header.flags & ComposefsHeader.flagHasACL != 0 }

    /// The composefs header of an image, checked.
    public static func header(of image: UnsafeRawBufferPointer) throws(ImageFormatError) -> ComposefsHeader {
        guard image.count >= Self.blockSize else { throw .invalid("image is too small (\(image.count) bytes)") }
        guard let header = try? ComposefsHeader(decoding: ByteReader(image)) else { throw .invalid("truncated image header") }
        guard header.magic == ComposefsHeader.magic else { throw .invalid("not a composefs image (wrong magic)") }
        guard header.version == ComposefsHeader.headerVersion else {
            throw .unsupported("unsupported composefs header version \(header.version)")
        }
        guard header.composefsVersion <= ComposefsHeader.maxComposefsVersion else {
            throw .unsupported(
                "unsupported composefs format version \(header.composefsVersion) (known: 0 to \(ComposefsHeader.maxComposefsVersion))")
        }
        return header
    }

    /// Checks the headers and that the areas they point at are inside the image.
    public init(_ image: UnsafeRawBufferPointer) throws(ImageFormatError) {
        header = try Self.header(of: image)
        self.image = image
        reader = ByteReader(image)
        guard let superblock = try? Superblock(decoding: reader) else { throw .invalid("truncated superblock") }
        self.superblock = superblock
        guard superblock.magic == EROFSConstants.superMagic else { throw .invalid("not an EROFS image (wrong superblock magic)") }
        guard superblock.blockSizeBits == UInt8(EROFSConstants.blockSizeBits) else {
            throw .unsupported("unsupported EROFS block size 2^\(superblock.blockSizeBits)")
        }
        metaStart = Int(superblock.metaBlockAddress) * Self.blockSize
        sharedXattrStart = Int(superblock.xattrBlockAddress) * Self.blockSize
        guard metaStart < image.count else {
            throw .invalid("inode area (block \(superblock.metaBlockAddress)) is past the end of the image")
        }
        guard sharedXattrStart < image.count else {
            throw .invalid("shared xattr area (block \(superblock.xattrBlockAddress)) is past the end of the image")
        }
    }

    /// The bytes of a range that `dataRanges` or `xattr` handed out (so known to be inside).
    @inline(__always)
    public func bytes(_ range: ByteRange) -> UnsafeRawBufferPointer {
        range.count == 0 ? UnsafeRawBufferPointer(start: nil, count: 0) : UnsafeRawBufferPointer(rebasing: image[range.start..<range.start + range.count])
    }

    // MARK: Inodes

    /// The inode at `nid`: its header and xattr area must fit the image.
    public func inode(_ nid: UInt64) throws(ImageFormatError) -> InodeInfo {
        func fail(_ message: String) -> ImageFormatError { .invalid("inode \(nid): \(message)") }
        guard nid < UInt64((image.count - metaStart) >> EROFSConstants.slotSizeBits) else {
            throw fail("is past the end of the image")
        }
        let offset = metaStart + Int(nid) << EROFSConstants.slotSizeBits
        let header: InodeHeader
        do throws(OutOfBounds) {
            header = try InodeHeader(
                decoding: reader, at: offset, buildTime: superblock.buildTime, buildTimeNsec: superblock.buildTimeNsec)
        } catch {
            throw fail("truncated inode")
        }
        let xattrStart = offset + header.encodedSize
        let xattrSize = XattrBodyHeader.bodySize(inodeCount: header.xattrInodeCount)
        guard reader.contains(xattrStart, xattrSize) else {
            throw fail("xattrs at offset \(xattrStart) (\(xattrSize) bytes) are past the end of the image")
        }
        return InodeInfo(nid: nid, header: header, xattrStart: xattrStart, xattrSize: xattrSize)
    }

    /// Where a flat inode's data is: whole blocks at raw_blkaddr, then (tail-packed layout)
    /// the remainder inline after the inode.
    public func dataRanges(_ inode: InodeInfo) throws(ImageFormatError) -> (blocks: ByteRange, tail: ByteRange) {
        guard inode.isFlat else {
            throw .unsupported("inode \(inode.nid): unsupported data layout \(inode.header.dataLayout)")
        }
        guard inode.size <= UInt64(image.count) else {
            throw .invalid("inode \(inode.nid): size \(inode.size) is larger than the image")
        }
        let size = Int(inode.size)
        let blockBytes = inode.layout == .flatInline ? size / Self.blockSize * Self.blockSize : size
        let blocks = ByteRange(start: blockBytes == 0 ? 0 : Int(inode.union) * Self.blockSize, count: blockBytes)
        let tail = ByteRange(start: inode.tailStart, count: size - blockBytes)
        guard reader.contains(blocks.start, blocks.count) else {
            throw .invalid("inode \(inode.nid): data at block \(inode.union) (\(blocks.count) bytes) is past the end of the image")
        }
        guard reader.contains(tail.start, tail.count) else {
            throw .invalid("inode \(inode.nid): inline data at offset \(tail.start) (\(tail.count) bytes) is past the end of the image")
        }
        return (blocks, tail)
    }

    /// A flat inode's whole data: the blocks, then the inline tail.
    public func data(_ inode: InodeInfo) throws(ImageFormatError) -> [UInt8] {
        let (blocks, tail) = try dataRanges(inode)
        return Array(bytes(blocks)) + Array(bytes(tail))
    }

    // MARK: Directories

    /// A directory's data in pieces, each a self-contained run of dirents and names: every
    /// full block, then the inline tail. Piece `k` holds the readdir cookies from `k * blockSize`.
    public struct DirectoryLayout {
        public var blocks: ByteRange
        public var tail: ByteRange
        var blockPieces: Int { (blocks.count + ImageView.blockSize - 1) / ImageView.blockSize }
        public var pieceCount: Int { blockPieces + (tail.count > 0 ? 1 : 0) }

        public func piece(_ k: Int) -> ByteRange {
            if k < blockPieces {
                let start = k * ImageView.blockSize
                return ByteRange(start: blocks.start + start, count: min(ImageView.blockSize, blocks.count - start))
            }
            return tail
        }
    }

    public func directoryLayout(_ inode: InodeInfo) throws(ImageFormatError) -> DirectoryLayout {
        guard inode.isDirectory else { throw .invalid("inode \(inode.nid): not a directory") }
        let (blocks, tail) = try dataRanges(inode)
        return DirectoryLayout(blocks: blocks, tail: tail)
    }

    /// The number of dirents in a piece: the first name offset says where the dirents end.
    func direntCount(_ piece: ByteRange, _ nid: UInt64) throws(ImageFormatError) -> Int {
        guard piece.count >= Dirent.size, let first = try? Dirent(decoding: reader, at: piece.start) else {
            throw .invalid("inode \(nid): directory block: \(piece.count) bytes is too small for an entry")
        }
        let namesStart = Int(first.nameOffset)
        guard namesStart >= Dirent.size, namesStart % Dirent.size == 0, namesStart <= piece.count else {
            throw .invalid("inode \(nid): directory block: invalid name offset \(namesStart)")
        }
        return namesStart / Dirent.size
    }

    /// Dirent `i` of a piece holding `count`: its name runs to the next one's (the last to the
    /// end of the piece), cut at a NUL; an empty name is an error.
    func dirent(_ piece: ByteRange, _ i: Int, of count: Int, _ nid: UInt64) throws(ImageFormatError) -> (name: UnsafeRawBufferPointer, dirent: Dirent) {
        // All dirents lie before the first name, so inside the piece.
        let dirent: Dirent
        let nameEnd: Int
        do throws(OutOfBounds) {
            dirent = try Dirent(decoding: reader, at: piece.start + i * Dirent.size)
            nameEnd = i + 1 < count ? Int(try Dirent(decoding: reader, at: piece.start + (i + 1) * Dirent.size).nameOffset) : piece.count
        } catch {
            throw .invalid("inode \(nid): directory block: \(error)")
        }
        let nameStart = Int(dirent.nameOffset)
        guard count * Dirent.size <= nameStart, nameStart < nameEnd, nameEnd <= piece.count else {
            throw .invalid("inode \(nid): directory block: entry \(i) has an invalid name offset \(nameStart)")
        }
        var name = UnsafeRawBufferPointer(rebasing: image[(piece.start + nameStart)..<(piece.start + nameEnd)])
        if let nul = name.firstIndex(of: 0) {
            guard nul > 0 else { throw .invalid("inode \(nid): directory block: entry \(i) has an empty name") }
            name = UnsafeRawBufferPointer(rebasing: name[..<nul])
        }
        return (name, dirent)
    }

    /// The nid of the entry `name` of a directory, by binary search of its sorted entries
    /// ("." and ".." included), first over pieces then within one; nil when there is none.
    public func lookup(_ directory: InodeInfo, _ name: UnsafeRawBufferPointer) throws(ImageFormatError) -> UInt64? {
        let layout = try directoryLayout(directory)
        let nid = directory.nid
        var low = 0
        var high = layout.pieceCount - 1
        while low <= high {
            let mid = low + (high - low) / 2
            let piece = layout.piece(mid)
            let count = try direntCount(piece, nid)
            let first = try dirent(piece, 0, of: count, nid)
            let c = compareBytes(name, first.name)
            if c == 0 { return first.dirent.nid }
            if c < 0 {
                high = mid - 1
                continue
            }
            let last = try dirent(piece, count - 1, of: count, nid)
            let d = compareBytes(name, last.name)
            if d == 0 { return last.dirent.nid }
            if d > 0 {
                low = mid + 1
                continue
            }
            // Between this piece's first and last entries: here or nowhere.
            var lo = 1
            var hi = count - 2
            while lo <= hi {
                let m = lo + (hi - lo) / 2
                let entry = try dirent(piece, m, of: count, nid)
                let e = compareBytes(name, entry.name)
                if e == 0 { return entry.dirent.nid }
                if e < 0 { hi = m - 1 } else { lo = m + 1 }
            }
            return nil
        }
        return nil
    }

    /// Calls `body` for each entry ("." and ".." included) from the cookie `offset` on (0 is
    /// the start), until it returns false.
    public func forEachDirent(
        _ directory: InodeInfo, from offset: Int = 0, _ body: (DirentRecord) throws(ImageFormatError) -> Bool
    ) throws(ImageFormatError) {
        guard offset >= 0 else { throw .invalid("inode \(directory.nid): negative directory offset") }
        let layout = try directoryLayout(directory)
        var k = offset / Self.blockSize
        // A cookie inside a piece is rounded up to a dirent boundary, as the reference does.
        var i = (offset % Self.blockSize + Dirent.size - 1) / Dirent.size
        while k < layout.pieceCount {
            let piece = layout.piece(k)
            let count = try direntCount(piece, directory.nid)
            while i < count {
                let entry = try dirent(piece, i, of: count, directory.nid)
                let next = i + 1 < count ? k * Self.blockSize + (i + 1) * Dirent.size : (k + 1) * Self.blockSize
                let record = DirentRecord(name: entry.name, nid: entry.dirent.nid, fileType: entry.dirent.fileType, nextOffset: next)
                guard try body(record) else { return }
                i += 1
            }
            k += 1
            i = 0
        }
    }

    // MARK: Xattrs

    /// Calls `body` for each xattr, inline ones first, then the shared ones, until it
    /// returns false.
    public func forEachXattr(_ inode: InodeInfo, _ body: (XattrRecord) throws(ImageFormatError) -> Bool) throws(ImageFormatError) {
        guard inode.xattrSize > 0 else { return }
        func fail(_ message: String) -> ImageFormatError { .invalid("inode \(inode.nid): \(message)") }
        let start = inode.xattrStart
        let end = start + inode.xattrSize
        guard inode.xattrSize >= XattrBodyHeader.size, let header = try? XattrBodyHeader(decoding: reader, at: start) else {
            throw fail("xattr area is too small")
        }
        let sharedCount = Int(header.sharedCount)
        var position = start + XattrBodyHeader.size + sharedCount * 4
        guard position <= end else { throw fail("\(sharedCount) shared xattrs do not fit its xattr area") }
        while position < end {
            let (record, length) = try xattrEntry(at: position, limit: end, inode.nid)
            guard try body(record) else { return }
            position += length
        }
        for i in 0..<sharedCount {
            let id: UInt32
            do throws(OutOfBounds) { id = try XattrBodyHeader.sharedID(reader, header: start, index: i) } catch {
                throw fail("shared xattr id \(i) is cut off")
            }
            let (record, _) = try xattrEntry(at: sharedXattrStart + Int(id) * 4, limit: image.count, inode.nid)
            guard try body(record) else { return }
        }
    }

    /// The entry at `offset`, which with its name and value must end by `limit`, and its padded length.
    private func xattrEntry(at offset: Int, limit: Int, _ nid: UInt64) throws(ImageFormatError) -> (XattrRecord, Int) {
        func cutOff() -> ImageFormatError { .invalid("inode \(nid): xattr entry at offset \(offset) is cut off") }
        guard offset >= 0, offset <= limit - XattrEntry.headerSize else { throw cutOff() }
        let entry: XattrEntry
        do throws(OutOfBounds) { entry = try XattrEntry(decoding: reader, at: offset) } catch { throw cutOff() }
        let nameStart = offset + XattrEntry.headerSize
        let nameLength = Int(entry.nameLength)
        guard nameLength + Int(entry.valueLength) <= limit - nameStart else { throw cutOff() }
        let record = XattrRecord(
            index: entry.nameIndex,
            name: UnsafeRawBufferPointer(rebasing: image[nameStart..<nameStart + nameLength]),
            value: UnsafeRawBufferPointer(rebasing: image[nameStart + nameLength..<nameStart + nameLength + Int(entry.valueLength)]))
        return (record, entry.encodedSize)
    }

    /// The value of the xattr stored under prefix `index` with suffix `name`, nil when absent.
    public func xattr(_ inode: InodeInfo, index: UInt8, name: some ByteStorage) throws(ImageFormatError) -> UnsafeRawBufferPointer? {
        var found: UnsafeRawBufferPointer?
        try withBytes(name) { (wanted) throws(ImageFormatError) in
            try forEachXattr(inode) { record in
                if record.index == index && compareBytes(record.name, wanted) == 0 {
                    found = record.value
                    return false
                }
                return true
            }
        }
        return found
    }
}
