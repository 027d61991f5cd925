// Format 2: the EROFS layout composefs-rs wrote before it matched the C writer, byte for byte
// as composefs-rs 0.9 writes `FormatVersion::V2`. It shares the records and the directory
// block rule with formats 0 and 1, and differs in nearly everything else:
// - inodes in depth-first pre-order (children by name), all extended, ino = nid, mtime in
//   whole seconds, build time 0, no 00..ff stubs, no root opaque xattr, no ACL header flag;
// - composefs-rs's file model: a leaf's nlink is the number of its entries; a file with a
//   digest is redirected to the digest's object path (its payload is ignored); a file
//   without one must have an object path as payload, or no data at all (a sparse file);
//   inline content goes all inline (at most 512 bytes), so do symlink targets (1024);
// - whiteouts (character devices 0/0) are stored as they are, wherever they are;
// - xattrs: `lustre.` is abbreviated, each inode keeps its own order (overlay xattrs first,
//   then by name), and the shared table is sorted by (prefix, suffix, value) and referred to
//   by absolute 4-byte offsets;
// - the only padding: an inline tail crossing into another block moves its inode
//   (`tailPadding`), and only directory blocks go to the data area.

import ComposeFSBase
import EROFS
import FsVerity

/// An xattr as stored: prefix index, the rest of the name, the value. Compared as
/// composefs-rs orders its shared table: by index, then suffix bytes, then value bytes.
struct StoredXattr: Hashable, Comparable {
    var index: UInt8
    var suffix: [UInt8]
    var value: [UInt8]

    var encodedSize: Int { XattrEntry.encodedSize(suffixLength: suffix.count, valueLength: value.count) }

    func encode(into out: inout ByteWriter) {
        XattrEntry.encode(index: index, suffix: suffix[...], value: value, into: &out)
    }

    static func < (a: StoredXattr, b: StoredXattr) -> Bool {
        if a.index != b.index { return a.index < b.index }
        let c = compareBytes(a.suffix, b.suffix)
        return c != 0 ? c < 0 : compareBytes(a.value, b.value) < 0
    }

    // Whole buffers at once; the synthesized conformance feeds bytes one by one.
    func hash(into hasher: inout Hasher) {
        hasher.combine(index)
        suffix.withUnsafeBytes { hasher.combine(bytes: $0) }
        hasher.combine(suffix.count)
        value.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// One inode of a format 2 image.
struct NodeV2 {
    /// What follows the inode's xattrs, which decides its layout.
    enum Body {
        case directory(DirectoryBlocks)
        /// Inline file content or a symlink target (flat-plain when empty).
        case inline([UInt8])
        /// A file whose data is elsewhere: a single chunk of the largest size, with one null
        /// chunk index when the file has a digest and none otherwise (as composefs-rs does).
        case chunked(size: UInt64, index: Bool)
        case device(UInt32)
        case none
    }

    let source: Inode
    /// Where it was met first (for messages): the name and the parent's node index.
    let name: [UInt8]
    let parent: Int
    var body: Body
    var nlink: UInt32 = 1
    /// Unshared xattrs in their on-disk order, then the shared ones by table index, in the
    /// order the inode had them.
    var xattrs: [StoredXattr] = []
    var shared: [Int] = []
    /// Bits of the name filter (inverted on disk), over all the inode's xattrs.
    var filter: UInt32 = 0
    /// Directory entries in name order, "." and ".." included: (name, node index).
    var dirents: [(name: [UInt8], target: Int)] = []

    // Placement, as computed by `ImageLayoutV2.place`.
    var padding = 0
    var offset = 0
    var xattrSize = 0
    var blockStart = 0

    var nid: UInt64 { UInt64(offset >> EROFSConstants.slotSizeBits) }

    mutating func addXattr(_ name: [UInt8], _ value: [UInt8]) {
        // Every prefix, `lustre.` too (formats 0 and 1 leave it out).
        let (index, suffix) = EROFSXattrPrefix.split(name, among: EROFSXattrPrefix.readable)
        filter |= XattrBodyHeader.filterBit(index: index, suffix: suffix)
        xattrs.append(StoredXattr(index: index, suffix: Array(suffix), value: value))
    }

    var layout: EROFSDataLayout {
        switch body {
        case let .directory(split): return split.tail.isEmpty ? .flatPlain : .flatInline
        case let .inline(bytes): return bytes.isEmpty ? .flatPlain : .flatInline
        case .chunked: return .chunkBased
        case .device, .none: return .flatPlain
        }
    }

    var size: UInt64 {
        switch body {
        case let .directory(split): return split.size
        case let .inline(bytes): return UInt64(bytes.count)
        case let .chunked(size, _): return size
        case .device, .none: return 0
        }
    }

    /// Bytes written after the xattrs.
    var inlineSize: Int {
        switch body {
        case let .directory(split): return split.tailSize
        case let .inline(bytes): return bytes.count
        case let .chunked(_, index): return index ? ChunkIndex.entrySize : 0
        case .device, .none: return 0
        }
    }
}

/// The inodes of a tree in format 2 order, placed.
struct ImageLayoutV2 {
    static let blockSize = EROFSConstants.blockSize
    static let slotSize = EROFSConstants.slotSize
    static let inlineContentMax = 512
    static let symlinkMax = 1024
    /// i_u of chunk-based files: chunks of 2^(12+31) bytes, so one chunk covers any file.
    static let chunkFormat = UInt32(EROFSConstants.chunkFormatBlockBitsMask)

    var nodes: [NodeV2] = []
    var sharedXattrs: [StoredXattr] = []
    var sharedOffsets: [Int] = []
    var end = 0

    init(root: Inode) throws(ImageWriteError) {
        try collect(root: root)
        shareXattrs()
        try place()
    }

    // MARK: Depth-first collection

    /// A directory whose entries are being collected, and its next entry.
    private struct Frame {
        let node: Int
        var next = 0
    }

    /// Numbers inodes depth-first, a directory before its children (in name order), a hard
    /// linked leaf where it is met first; records each directory's entries.
    private mutating func collect(root: Inode) throws(ImageWriteError) {
        var leaves: [ObjectIdentifier: Int] = [:]
        var directories: Set<ObjectIdentifier> = [ObjectIdentifier(root)]
        try addNode(root, name: [], parent: 0)
        var stack = [Frame(node: 0)]
        while let top = stack.indices.last {
            let frame = stack[top]
            let entries = nodes[frame.node].source.entries
            guard frame.next < entries.count else {
                finishDirectory(frame.node)
                stack.removeLast()
                continue
            }
            stack[top].next += 1
            let entry = entries[frame.next]
            let inode = entry.inode
            let child: Int
            if inode.isDirectory {
                guard directories.insert(ObjectIdentifier(inode)).inserted else {
                    throw .invalidNode(path: path(of: frame.node, entry.name), reason: "a directory cannot have more than one entry")
                }
                child = try addNode(inode, name: entry.name, parent: frame.node)
                stack.append(Frame(node: child))
            } else if let known = leaves[ObjectIdentifier(inode)] {
                guard !inode.isWhiteout else {
                    throw .invalidNode(path: path(of: frame.node, entry.name), reason: "a whiteout cannot be hard-linked in format 2")
                }
                child = known
                nodes[child].nlink += 1
            } else {
                child = try addNode(inode, name: entry.name, parent: frame.node)
                leaves[ObjectIdentifier(inode)] = child
            }
            nodes[frame.node].dirents.append((entry.name, child))
        }
    }

    /// The path of `name` in the directory `parent` ("/" for the root), for messages.
    private func path(of parent: Int, _ name: [UInt8]) -> [UInt8] {
        var components = [name]
        var i = parent
        while i != 0 {
            components.append(nodes[i].name)
            i = nodes[i].parent
        }
        return name.isEmpty ? [] : components.reversed().flatMap { [UInt8(ascii: "/")] + $0 }
    }

    /// Adds "." and "..", then cuts the entries into blocks; nlink counts the subdirectories.
    private mutating func finishDirectory(_ i: Int) {
        let subdirectories = nodes[i].source.entries.reduce(0) { $0 + ($1.inode.isDirectory ? 1 : 0) }
        nodes[i].nlink = UInt32(2 + subdirectories)
        ImageLayout.insertDotEntries(&nodes[i].dirents, this: i, parent: nodes[i].parent)
        let dirents = nodes[i].dirents
        nodes[i].body = .directory(DirectoryBlocks(count: dirents.count) { dirents[$0].name.count })
    }

    /// Adds the inode as format 2 stores it: its body and its xattrs, composefs-rs's
    /// overlay xattrs first. Throws for what format 2 cannot hold.
    @discardableResult
    private mutating func addNode(_ inode: Inode, name: [UInt8], parent: Int) throws(ImageWriteError) -> Int {
        let node = try Self.makeNode(inode, name: name, parent: parent) { reason in
            .invalidNode(path: path(of: parent, name), reason: reason)
        }
        nodes.append(node)
        return nodes.count - 1
    }

    private static func makeNode(
        _ inode: Inode, name: [UInt8], parent: Int, _ fail: (String) -> ImageWriteError
    ) throws(ImageWriteError) -> NodeV2 {
        guard FileMode.isValidType(inode.mode) else { throw fail("invalid file mode 0" + String(inode.mode, radix: 8)) }
        if !inode.isDirectory && !inode.entries.isEmpty { throw fail("only directories can have children") }
        var node = NodeV2(source: inode, name: name, parent: parent, body: .none)
        switch inode.fileType {
        case FileMode.directory:
            // Cut into blocks once its entries are known (`finishDirectory`).
            node.body = .directory(DirectoryBlocks(count: 0) { _ in 0 })
        case FileMode.regular:
            try addRegularFile(inode, to: &node, fail)
        case FileMode.symlink:
            guard let target = inode.payload, !target.isEmpty else { throw fail("symlink has no target") }
            guard target.count <= symlinkMax else {
                throw fail("symlink target of \(target.count) bytes is longer than format 2 allows (\(symlinkMax))")
            }
            node.body = .inline(target)
        case FileMode.characterDevice, FileMode.blockDevice:
            node.body = .device(inode.rdev)
        default:
            break
        }
        // By name, with trusted.overlay.* escaped so overlayfs does not act on them.
        for xattr in inode.xattrs.sorted(by: { compareBytes($0.key, $1.key) < 0 }) {
            var name = xattr.key
            if name.starts(with: OverlayXattr.prefix) {
                name = OverlayXattr.escapePrefix + name[OverlayXattr.prefix.count...]
            }
            node.addXattr(name, xattr.value)
        }
        return node
    }

    /// composefs-rs's four kinds of regular file: inline content; a backing object named
    /// by the digest; one named by the payload alone; no data anywhere (sparse).
    private static func addRegularFile(
        _ inode: Inode, to node: inout NodeV2, _ fail: (String) -> ImageWriteError
    ) throws(ImageWriteError) {
        if let content = inode.content {
            guard content.count <= inlineContentMax else {
                throw fail("inline content of \(content.count) bytes is longer than format 2 allows (\(inlineContentMax))")
            }
            node.body = .inline(content)
        } else if let digest = inode.digest, inode.payload != nil || inode.size > 0 {
            node.body = .chunked(size: inode.size, index: true)
            let metacopy = OverlayMetacopy(digestAlgorithm: digest.algorithm.rawValue, digest: digest.bytes)
            node.addXattr(OverlayXattr.metacopy, metacopy.encoded())
            node.addXattr(OverlayXattr.redirect, Array(("/" + digest.objectPath).utf8))
        } else if let payload = inode.payload {
            guard let object = objectID(endingPath: payload) else {
                throw fail("backing file '\(displayBytes(payload))' does not end in an object path (xx/yyyy…), which format 2 needs for a file without a digest")
            }
            node.body = .chunked(size: inode.size, index: false)
            node.addXattr(OverlayXattr.metacopy, [])
            node.addXattr(OverlayXattr.redirect, Array(("/" + object.objectPath).utf8))
        } else if inode.size > 0 {
            node.body = .chunked(size: inode.size, index: false)
            node.addXattr(OverlayXattr.metacopy, [])
        } else {
            node.body = .inline([])
        }
    }

    /// The object a path names by its last `xx/yyyy…` (whatever comes before, either case).
    private static func objectID(endingPath path: [UInt8]) -> ObjectID? {
        for algorithm in FsVerityAlgorithm.allCases {
            let tail = path.suffix(algorithm.digestSize * 2 + 1)
            guard tail.count == algorithm.digestSize * 2 + 1, tail[tail.startIndex + 2] == UInt8(ascii: "/") else { continue }
            let hex = String(decoding: tail.prefix(2) + tail.dropFirst(3), as: UTF8.self)
            if let id = ObjectID(hex: hex, algorithm: algorithm) { return id }
        }
        return nil
    }

    // MARK: Shared xattrs

    /// Xattrs (prefix, suffix and value) on more than one inode go to the shared table, in
    /// ascending order; each inode refers to them in its own order.
    private mutating func shareXattrs() {
        var counts: [StoredXattr: Int] = [:]
        for node in nodes {
            for x in node.xattrs { counts[x, default: 0] += 1 }
        }
        sharedXattrs = counts.compactMap { $0.value > 1 ? $0.key : nil }.sorted()
        guard !sharedXattrs.isEmpty else { return }
        var indexes: [StoredXattr: Int] = [:]
        for (i, x) in sharedXattrs.enumerated() { indexes[x] = i }
        for i in nodes.indices {
            var local: [StoredXattr] = []
            for x in nodes[i].xattrs {
                if let index = indexes[x] { nodes[i].shared.append(index) } else { local.append(x) }
            }
            nodes[i].xattrs = local
        }
    }

    // MARK: Placement

    /// Offsets of everything: header and superblock, the inodes (each in a 32-byte slot,
    /// moved where its inline tail would cross a block), the shared xattrs right after them,
    /// then, block aligned, the directory blocks in inode order.
    private mutating func place() throws(ImageWriteError) {
        var pos = EROFSConstants.superblockOffset + Superblock.size
        for i in nodes.indices {
            let start = roundUp(pos, Self.slotSize)
            nodes[i].xattrSize = 0
            if nodes[i].filter != 0 {
                nodes[i].xattrSize = nodes[i].xattrs.reduce(XattrBodyHeader.size + 4 * nodes[i].shared.count) { $0 + $1.encodedSize }
            }
            guard nodes[i].shared.count <= Int(UInt8.max),
                XattrBodyHeader.inodeCount(bodySize: nodes[i].xattrSize) <= Int(UInt16.max)
            else {
                throw .invalidNode(path: path(of: nodes[i].parent, nodes[i].name), reason: "more xattrs than format 2 can hold")
            }
            let headerSize = InodeHeader.extendedSize + nodes[i].xattrSize
            let offset =
                nodes[i].layout == .flatInline
                ? Self.tailPadding(start: start, headerSize: headerSize, size: nodes[i].size) : start
            nodes[i].padding = offset - pos
            nodes[i].offset = offset
            pos = offset + headerSize + nodes[i].inlineSize
        }
        pos = roundUp(pos, Self.slotSize)
        for x in sharedXattrs {
            sharedOffsets.append(pos)
            pos += x.encodedSize
        }
        guard pos / 4 <= Int(UInt32.max) else { throw .invalidNode(path: [], reason: "too much metadata for format 2") }
        pos = roundUp(pos, Self.blockSize)
        for i in nodes.indices {
            nodes[i].blockStart = pos
            if case let .directory(split) = nodes[i].body { pos += split.blocks.count * Self.blockSize }
        }
        guard pos / Self.blockSize <= Int(UInt32.max) else { throw .invalidNode(path: [], reason: "image too large for format 2") }
        end = pos
    }

    /// Where an inode with an inline tail goes: when the last byte before its tail and the
    /// first byte after it lie in different blocks (so a tail ending right at a block boundary
    /// counts too), it moves by as much as the byte before its tail is from that boundary,
    /// then to a slot. Not checked again afterwards, as composefs-rs does.
    private static func tailPadding(start: Int, headerSize: Int, size: UInt64) -> Int {
        let inlineStart = start + headerSize
        let lastMetadataByte = inlineStart - 1
        let inlineEnd = inlineStart + Int(size % UInt64(blockSize))
        guard lastMetadataByte / blockSize != inlineEnd / blockSize else { return start }
        return roundUp(start + blockSize - lastMetadataByte % blockSize, slotSize)
    }

    // MARK: Emit

    func emit(output: (UnsafeRawBufferPointer) throws -> Void) throws(ImageWriteError) {
        var out = ImageOutput()
        ComposefsHeader(flags: 0, composefsVersion: UInt32(FormatVersion.v2.rawValue)).encode(into: &out.buffer)
        out.buffer.zeros(EROFSConstants.superblockOffset - ComposefsHeader.size)
        var sb = Superblock()
        sb.featureCompat = EROFSConstants.featureCompatMtime | EROFSConstants.featureCompatXattrFilter
        // The root comes first, so its nid is small whatever padding precedes it.
        sb.rootNid = UInt16(truncatingIfNeeded: nodes[0].nid)
        sb.inodeCount = UInt64(nodes.count)
        sb.blocks = UInt32(end / Self.blockSize)
        sb.encode(into: &out.buffer)

        for node in nodes {
            emitInode(node, into: &out.buffer)
            try out.flushIfLarge(output)
        }
        out.buffer.align(to: Self.slotSize)
        for x in sharedXattrs { x.encode(into: &out.buffer) }
        out.buffer.align(to: Self.blockSize)
        for node in nodes {
            guard case let .directory(split) = node.body else { continue }
            for range in split.blocks {
                emitDirents(node, range, into: &out.buffer)
                out.buffer.align(to: Self.blockSize)
            }
            try out.flushIfLarge(output)
        }
        try out.finish(output)
    }

    private func emitInode(_ node: NodeV2, into out: inout ByteWriter) {
        out.zeros(node.padding)
        let union: UInt32
        switch node.body {
        case let .directory(split): union = split.blocks.isEmpty ? 0 : UInt32(node.blockStart / Self.blockSize)
        case .chunked: union = Self.chunkFormat
        case let .device(rdev): union = rdev
        case .inline, .none: union = 0
        }
        let source = node.source
        InodeHeader(
            extended: true, dataLayout: node.layout,
            xattrInodeCount: UInt16(XattrBodyHeader.inodeCount(bodySize: node.xattrSize)),
            mode: UInt16(truncatingIfNeeded: source.fileType | (source.mode & 0o7777)), nlink: node.nlink,
            size: node.size, union: union, ino: UInt32(truncatingIfNeeded: node.nid), uid: source.uid, gid: source.gid,
            mtime: UInt64(bitPattern: source.mtime.seconds), mtimeNsec: 0
        ).encode(into: &out)
        if node.xattrSize > 0 {
            XattrBodyHeader(nameFilter: ~node.filter, sharedCount: UInt8(node.shared.count)).encode(into: &out)
            for index in node.shared { out.u32(UInt32(sharedOffsets[index] / 4)) }
            for x in node.xattrs { x.encode(into: &out) }
        }
        switch node.body {
        case let .directory(split): emitDirents(node, split.tail, into: &out)
        case let .inline(bytes): out.bytes(bytes)
        case .chunked(_, index: true): ChunkIndex.encodeHoles(count: 1, into: &out)
        case .chunked, .device, .none: break
        }
    }

    private func emitDirents(_ node: NodeV2, _ range: Range<Int>, into out: inout ByteWriter) {
        Dirent.encodeBlock(count: range.count, into: &out) { i in
            let d = node.dirents[range.lowerBound + i]
            return (d.name, nodes[d.target].nid, EROFSFileType(mode: nodes[d.target].source.mode))
        }
    }
}
