// Reads a composefs EROFS image back into a tree, producing what the reference
// libcomposefs reader produces: the overlay xattrs the writer added are turned
// back into payloads, digests and whiteouts, and escaped ones are unescaped.
//
// Images are untrusted input: every offset is bounds-checked, each inode is
// visited once, the depth is capped, and the total metadata decoded is bounded
// by the image size, so a hostile image fails cleanly in linear time.

import EROFS

#if canImport(Glibc)
import Glibc
#endif

public enum ImageReadError: Error, Equatable, CustomStringConvertible {
    /// The image is malformed.
    case invalid(String)
    /// The image is well formed but uses something this reader does not support.
    case unsupported(String)
    /// The image file could not be read.
    case io(SystemError)

    public var description: String {
        switch self {
        case let .invalid(message), let .unsupported(message): return message
        case let .io(error): return error.description
        }
    }
}

public enum ImageReader {
    /// Directory nesting limit (PATH_MAX allows at most 2048 levels of real paths).
    public static let maxDepth = 4096

    /// The composefs format version recorded in the image header.
    public static func version(of image: UnsafeRawBufferPointer) throws(ImageReadError) -> UInt32 {
        try header(of: ByteReader(image)).composefsVersion
    }

    /// Decodes the tree of an image. With a `filter`, only root entries whose name is
    /// in it are loaded (with everything below them).
    public static func read(_ image: UnsafeRawBufferPointer, filter: Set<[UInt8]>? = nil) throws(ImageReadError) -> Inode {
        var loader = try Loader(image)
        return try loader.load(filter: filter)
    }

    public static func read(path: String, filter: Set<[UInt8]>? = nil) throws(ImageReadError) -> Inode {
        try withContents(ofFile: path) { (image) throws(ImageReadError) in try read(image, filter: filter) }
    }

    /// Calls `body` with the contents of a file: mapped if it is a regular file, read
    /// otherwise (pipes).
    public static func withContents<R>(
        ofFile path: String, _ body: (UnsafeRawBufferPointer) throws(ImageReadError) -> R
    ) throws(ImageReadError) -> R {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(SystemError("open", path: path)) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(SystemError("stat", path: path)) }
        if (st.st_mode & S_IFMT) == S_IFREG && st.st_size > 0 {
            let size = Int(st.st_size)
            guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
                throw .io(SystemError("mmap", path: path))
            }
            defer { munmap(base, size) }
            return try body(UnsafeRawBufferPointer(start: base, count: size))
        }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(SystemError("read", path: path))
            }
            if n == 0 { break }
            data.append(contentsOf: chunk[0..<n])
        }
        let result: Result<R, ImageReadError> = data.withUnsafeBytes { image in
            do throws(ImageReadError) { return .success(try body(image)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    static func header(of bytes: ByteReader) throws(ImageReadError) -> ComposefsHeader {
        guard bytes.count >= EROFSConstants.blockSize else {
            throw .invalid("image is too small (\(bytes.count) bytes)")
        }
        let header: ComposefsHeader
        do { header = try ComposefsHeader(decoding: bytes) } catch { throw .invalid(error.description) }
        guard header.magic == ComposefsHeader.magic else { throw .invalid("not a composefs image (wrong magic)") }
        guard header.version == ComposefsHeader.headerVersion else {
            throw .unsupported("unsupported composefs header version \(header.version)")
        }
        return header
    }
}

/// The decoding state of one image.
private struct Loader {
    static let blockSize = EROFSConstants.blockSize

    /// What a nid turned out to be, so later references need no decoding.
    enum Visited {
        case file(Inode)
        case directory
        case whiteout
    }

    /// A directory whose entries are being loaded.
    struct Frame {
        let inode: Inode
        let nid: UInt64
        let entries: [(name: [UInt8], nid: UInt64)]
        var next = 0
    }

    let image: UnsafeRawBufferPointer
    let metaStart: Int
    let sharedXattrStart: Int
    let buildTime: UInt64
    let buildTimeNsec: UInt32
    let rootNid: UInt64
    var visited: [UInt64: Visited] = [:]
    /// Bytes of inodes, xattr areas and data still allowed to be decoded. In a valid
    /// image these never overlap, so their total is at most the image size; a hostile
    /// image reusing them (say, many directories sharing one block) runs out instead
    /// of making the reader do quadratic work.
    var budget: Int

    init(_ image: UnsafeRawBufferPointer) throws(ImageReadError) {
        let bytes = ByteReader(image)
        _ = try ImageReader.header(of: bytes)
        let superblock: Superblock
        do {
            superblock = try Superblock(decoding: ByteReader(bytes.slice(at: EROFSConstants.superblockOffset, count: Superblock.size)))
        } catch {
            throw .invalid("truncated superblock")
        }
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
        self.image = image
        buildTime = superblock.buildTime
        buildTimeNsec = superblock.buildTimeNsec
        rootNid = UInt64(superblock.rootNid)
        budget = image.count
    }

    /// The bytes at `offset..<offset + count`, or an error naming `what` was cut off.
    /// Nothing is read for a count of 0, wherever it is (unused block addresses).
    func region(_ offset: Int, _ count: Int, _ what: @autoclosure () -> String) throws(ImageReadError) -> UnsafeRawBufferPointer {
        if count == 0 { return UnsafeRawBufferPointer(start: nil, count: 0) }
        guard offset >= 0, count >= 0, offset <= image.count, count <= image.count - offset else {
            throw .invalid("\(what()) at offset \(offset) (\(count) bytes) is past the end of the image")
        }
        return UnsafeRawBufferPointer(rebasing: image[offset..<offset + count])
    }

    /// Counts decoded bytes against the budget.
    mutating func charge(_ count: Int, _ nid: UInt64) throws(ImageReadError) {
        budget -= count
        guard budget >= 0 else {
            throw .invalid("inode \(nid): inodes and data add up to more than the image size (overlapping structures)")
        }
    }

    // MARK: Tree walk

    /// Loads the tree depth-first in directory order, so the first entry met for an
    /// inode is its primary one, as in the reference. Iterative: depth is untrusted.
    mutating func load(filter: Set<[UInt8]>?) throws(ImageReadError) -> Inode {
        guard let (root, rootData) = try loadInode(rootNid) else {
            throw .invalid("root inode \(rootNid) is a whiteout")
        }
        guard root.isDirectory else { throw .invalid("root inode \(rootNid) is not a directory") }
        var stack = [Frame(inode: root, nid: rootNid, entries: try directoryEntries(rootNid, rootData, filter: filter))]
        while let top = stack.indices.last {
            guard stack[top].next < stack[top].entries.count else {
                stack.removeLast()
                continue
            }
            let (name, nid) = stack[top].entries[stack[top].next]
            stack[top].next += 1
            let parent = stack[top]
            func add(_ inode: Inode, hardlink: Bool) throws(ImageReadError) {
                do throws(TreeError) {
                    try parent.inode.addEntry(name, inode, isHardlink: hardlink)
                } catch {
                    throw .invalid("directory inode \(parent.nid): \(error.description)")
                }
            }
            switch visited[nid] {
            case let .file(inode)?:
                try add(inode, hardlink: true)
            case .directory?:
                throw .invalid("directory inode \(nid) is reached twice (a loop or a hard-linked directory)")
            case .whiteout?:
                break
            case nil:
                guard let (child, data) = try loadInode(nid) else { break }
                try add(child, hardlink: false)
                if child.isDirectory {
                    guard stack.count < ImageReader.maxDepth else {
                        throw .invalid("directories are nested more than \(ImageReader.maxDepth) levels deep")
                    }
                    stack.append(Frame(inode: child, nid: nid, entries: try directoryEntries(nid, data, filter: nil)))
                }
            }
        }
        return root
    }

    // MARK: Inodes

    /// Decodes an inode, except a directory's entries. Returns nil for a real
    /// whiteout (a character device 0/0), which is left out: composefs adds those
    /// to the root itself.
    mutating func loadInode(_ nid: UInt64) throws(ImageReadError) -> (Inode, DataLocation)? {
        func fail(_ message: String) -> ImageReadError { .invalid("inode \(nid): \(message)") }
        guard nid < UInt64((image.count - metaStart) >> EROFSConstants.slotSizeBits) else {
            throw fail("is past the end of the image")
        }
        let offset = metaStart + Int(nid) << EROFSConstants.slotSizeBits
        let header: InodeHeader
        do {
            header = try InodeHeader(decoding: ByteReader(image), at: offset, buildTime: buildTime, buildTimeNsec: buildTimeNsec)
        } catch {
            throw fail("truncated inode")
        }
        let inode = Inode(mode: UInt32(header.mode))
        if inode.isDevice { inode.rdev = header.union }
        if inode.isWhiteout {
            visited[nid] = .whiteout
            return nil
        }
        visited[nid] = inode.isDirectory ? .directory : .file(inode)
        inode.nlink = header.nlink
        inode.uid = header.uid
        inode.gid = header.gid
        inode.size = header.size
        inode.mtime = Timestamp(seconds: Int64(bitPattern: header.mtime), nanoseconds: header.mtimeNsec)

        let xattrStart = offset + header.encodedSize
        let xattrSize = XattrBodyHeader.bodySize(inodeCount: header.xattrInodeCount)
        try charge(header.encodedSize + xattrSize, nid)
        let data = DataLocation(header: header, tailStart: xattrStart + xattrSize)
        switch inode.fileType {
        case FileMode.symlink:
            guard header.size < UInt64(Limits.pathMax) else { throw fail("symlink target of \(header.size) bytes is too long") }
            try charge(Int(header.size), nid)
            // The whole target is either inline or in a block.
            let start = data.tailpacked ? data.tailStart : data.blockStart
            var target = Array(try region(start, Int(header.size), "inode \(nid): symlink target"))
            truncateAtNul(&target)
            inode.payload = target
        case FileMode.regular where header.size > 0:
            switch EROFSDataLayout(rawValue: header.dataLayout) {
            case .flatPlain?, .flatInline?:
                guard header.size <= UInt64(min(Limits.inlineContentMax, image.count)) else {
                    throw fail("inline content of \(header.size) bytes is too large")
                }
                try charge(Int(header.size), nid)
                inode.content = try readData(data, nid, what: "file content")
            case .chunkBased?:
                break  // A backing file: its chunks are holes.
            default:
                throw .unsupported("inode \(nid): unsupported data layout \(header.dataLayout)")
            }
        default:
            break
        }
        if xattrSize > 0 {
            try loadXattrs(into: inode, nid: nid, area: try region(xattrStart, xattrSize, "inode \(nid): xattrs"))
        }
        return (inode, data)
    }

    /// The full blocks followed by the inline tail.
    func readData(_ data: DataLocation, _ nid: UInt64, what: String) throws(ImageReadError) -> [UInt8] {
        var bytes = Array(try region(data.blockStart, data.blockBytes, "inode \(nid): \(what)"))
        bytes += try region(data.tailStart, data.tailBytes, "inode \(nid): inline \(what)")
        return bytes
    }

    // MARK: Directories

    /// A directory's entries in on-disk order, without "." and "..".
    mutating func directoryEntries(
        _ nid: UInt64, _ data: DataLocation, filter: Set<[UInt8]>?
    ) throws(ImageReadError) -> [(name: [UInt8], nid: UInt64)] {
        guard data.size <= UInt64(image.count) else {
            throw .invalid("inode \(nid): directory size \(data.size) is larger than the image")
        }
        try charge(Int(data.size), nid)
        var entries: [(name: [UInt8], nid: UInt64)] = []
        var done = 0
        while done < data.blockBytes {
            let start = data.blockStart + done
            let length = min(Self.blockSize, data.blockBytes - done)
            let block = try region(start, length, "inode \(nid): directory block \(start / Self.blockSize)")
            try readDirectoryBlock(block, nid, filter: filter, into: &entries)
            done += length
        }
        if data.tailBytes > 0 {
            let tail = try region(data.tailStart, data.tailBytes, "inode \(nid): inline directory data")
            try readDirectoryBlock(tail, nid, filter: filter, into: &entries)
        }
        return entries
    }

    /// One block of dirents: all 12-byte dirents first, then their names, each
    /// running to the next one's name offset (the last to the end or a NUL).
    func readDirectoryBlock(
        _ block: UnsafeRawBufferPointer, _ nid: UInt64, filter: Set<[UInt8]>?,
        into entries: inout [(name: [UInt8], nid: UInt64)]
    ) throws(ImageReadError) {
        func fail(_ message: String) -> ImageReadError { .invalid("inode \(nid): directory block: \(message)") }
        guard block.count >= Dirent.size else { throw fail("\(block.count) bytes is too small for an entry") }
        let namesStart = Int(block.le16(8))
        guard namesStart >= Dirent.size, namesStart % Dirent.size == 0, namesStart <= block.count else {
            throw fail("invalid name offset \(namesStart)")
        }
        let count = namesStart / Dirent.size
        // All dirents are before namesStart, so within the block.
        for i in 0..<count {
            let nameStart = Int(block.le16(i * Dirent.size + 8))
            let nameEnd = i + 1 < count ? Int(block.le16((i + 1) * Dirent.size + 8)) : block.count
            guard namesStart <= nameStart, nameStart <= nameEnd, nameEnd <= block.count else {
                throw fail("entry \(i) has an invalid name offset \(nameStart)")
            }
            var name = Array(UnsafeRawBufferPointer(rebasing: block[nameStart..<nameEnd]))
            truncateAtNul(&name)
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            if let filter, !filter.contains(name) { continue }
            entries.append((name, block.le64(i * Dirent.size)))
        }
    }

    // MARK: Xattrs

    /// Inline xattrs, then shared ones, translated as the reference does.
    func loadXattrs(into inode: Inode, nid: UInt64, area: UnsafeRawBufferPointer) throws(ImageReadError) {
        guard area.count >= XattrBodyHeader.size else { throw .invalid("inode \(nid): xattr area is too small") }
        let sharedCount = Int(area[4])
        let inlineStart = XattrBodyHeader.size + sharedCount * 4
        guard inlineStart <= area.count else {
            throw .invalid("inode \(nid): \(sharedCount) shared xattrs do not fit its xattr area")
        }
        var position = inlineStart
        while position < area.count {
            let entry = try xattrEntry(in: area, at: position, nid)
            try apply(entry.key, entry.value, to: inode, nid: nid)
            position += entry.length
        }
        let shared = UnsafeRawBufferPointer(rebasing: image[sharedXattrStart...])
        for i in 0..<sharedCount {
            let id = Int(area.le32(XattrBodyHeader.size + i * 4))
            let entry = try xattrEntry(in: shared, at: id * 4, nid)
            try apply(entry.key, entry.value, to: inode, nid: nid)
        }
    }

    /// The full name, value and padded length of the xattr entry at `offset`.
    func xattrEntry(
        in area: UnsafeRawBufferPointer, at offset: Int, _ nid: UInt64
    ) throws(ImageReadError) -> (key: [UInt8], value: [UInt8], length: Int) {
        func fail() -> ImageReadError { .invalid("inode \(nid): xattr entry at offset \(offset) is cut off") }
        guard offset <= area.count - XattrEntry.headerSize else { throw fail() }
        let nameLength = Int(area[offset])
        let index = area[offset + 1]
        let valueLength = Int(area.le16(offset + 2))
        let nameStart = offset + XattrEntry.headerSize
        let valueStart = nameStart + nameLength
        guard valueLength <= area.count - valueStart else { throw fail() }
        // The prefix named by the index, then the stored suffix.
        guard Int(index) < EROFSXattrPrefix.prefixes.count else {
            throw .invalid("inode \(nid): unknown xattr name index \(index)")
        }
        var key = EROFSXattrPrefix.prefixes[Int(index)]
        key.append(contentsOf: UnsafeRawBufferPointer(rebasing: area[nameStart..<valueStart]))
        // Names are C strings to the reference.
        truncateAtNul(&key)
        let value = Array(UnsafeRawBufferPointer(rebasing: area[valueStart..<valueStart + valueLength]))
        return (key, value, XattrEntry.encodedSize(suffixLength: nameLength, valueLength: valueLength))
    }

    /// Undoes the writer's overlay xattrs: redirect → payload, metacopy → digest,
    /// escaped whiteout → whiteout device; other trusted.overlay.overlay.X are
    /// unescaped and the remaining trusted.overlay.* dropped. The order of the
    /// xattrs matters (a whiteout takes no later payload), as in the reference.
    func apply(_ key: [UInt8], _ value: [UInt8], to inode: Inode, nid: UInt64) throws(ImageReadError) {
        if key == OverlayXattr.redirect {
            if inode.isRegular {
                // The writer prefixes the object path with '/'.
                var path = value.count > 1 && value[0] == UInt8(ascii: "/") ? Array(value.dropFirst()) : value
                truncateAtNul(&path)
                inode.payload = path
            }
            return
        }
        if key == OverlayXattr.metacopy {
            // struct ovl_metacopy with a SHA-256 or SHA-512 digest.
            if inode.isRegular && (value.count == 4 + 32 || value.count == 4 + 64) { inode.digest = Array(value[4...]) }
            return
        }
        if key == OverlayXattr.escapedWhiteout && inode.isRegular {
            inode.mode = FileMode.characterDevice | (inode.mode & ~FileMode.typeMask)
            inode.rdev = 0
            inode.size = 0
            inode.content = nil
            return
        }
        if key == OverlayXattr.escapedWhiteouts || key == OverlayXattr.userWhiteout || key == OverlayXattr.userWhiteouts {
            return
        }
        var name = key
        if key.hasPrefix(OverlayXattr.prefix) {
            guard key.hasPrefix(OverlayXattr.escapePrefix) else { return }
            name = OverlayXattr.prefix + key[OverlayXattr.escapePrefix.count...]
        }
        do {
            try inode.setXattr(name, value, external: false)
        } catch {
            throw .invalid("inode \(nid): \(error.description)")
        }
    }
}

/// Where an inode's data lives: blocks from raw_blkaddr, then for the inline
/// layout a tail right after the inode and its xattrs.
private struct DataLocation {
    let size: UInt64
    let tailpacked: Bool
    let blockStart: Int
    /// Bytes in blocks (the last block partial unless tailpacked).
    let blockBytes: Int
    let tailStart: Int
    let tailBytes: Int

    /// Only meaningful once the caller has bounded `header.size` by the image size.
    init(header: InodeHeader, tailStart: Int) {
        let blockSize = EROFSConstants.blockSize
        size = header.size
        tailpacked = header.dataLayout == EROFSDataLayout.flatInline.rawValue
        blockStart = Int(header.union) * blockSize
        let clamped = Int(clamping: header.size)
        blockBytes = tailpacked ? clamped / blockSize * blockSize : clamped
        tailBytes = tailpacked ? clamped % blockSize : 0
        self.tailStart = tailStart
    }
}

private func truncateAtNul(_ bytes: inout [UInt8]) {
    if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
}

extension UnsafeRawBufferPointer {
    // Little-endian loads at offsets the caller has checked.
    fileprivate func le16(_ offset: Int) -> UInt16 { UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    fileprivate func le32(_ offset: Int) -> UInt32 { UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    fileprivate func le64(_ offset: Int) -> UInt64 { UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
}
