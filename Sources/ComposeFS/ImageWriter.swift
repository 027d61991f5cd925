// Serializes a tree into a composefs EROFS image, byte for byte as the
// reference libcomposefs writer does (images are reproducible: the same tree
// must always give the same digest, whichever implementation built it).

import ComposeFSBase
import EROFS
import FsVerity

/// Image format versions: 0 is the original; 1 marks directories holding escaped
/// whiteouts with an opaque=x xattr; 2 is composefs-rs's own layout (`ImageWriterV2`),
/// written only when asked for as the minimum.
public struct ImageOptions: Sendable {
    public static let maxSupportedVersion: UInt32 = ComposefsHeader.maxComposefsVersion
    public static let defaultMinVersion: UInt32 = 0
    public static let defaultMaxVersion: UInt32 = 1

    /// The base version; raised up to `maxVersion` only if the tree needs it.
    public var minVersion: UInt32
    public var maxVersion: UInt32
    /// Pick the build time (the smallest mtime, which compact inodes share) comparing
    /// seconds as unsigned numbers, as composefs-rs does: a tree with mtimes before 1970
    /// then gets composefs-rs's image rather than the C writer's.
    public var unsignedMtimeOrder: Bool

    public init(minVersion: UInt32 = defaultMinVersion, maxVersion: UInt32 = defaultMaxVersion) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.unsignedMtimeOrder = false
    }

    /// Exactly the format `format`, written as composefs-rs writes it.
    public init(format: FormatVersion) {
        let version = UInt32(format.rawValue)
        self.init(minVersion: version, maxVersion: version)
        unsignedMtimeOrder = true
    }
}

public enum ImageWriteError: Error, CustomStringConvertible {
    case unsupportedVersion(UInt32)
    case invalidNode(path: [UInt8], reason: String)
    /// The output closure failed with this error.
    case output(any Error)

    public var description: String {
        switch self {
        case let .unsupportedVersion(v):
            return "unsupported format version \(v) (maximum is \(ImageOptions.maxSupportedVersion))"
        case let .invalidNode(path, reason): return "\(displayPath(path)): \(reason)"
        case let .output(error): return "\(error)"
        }
    }
}

func displayPath(_ path: [UInt8]) -> String { path.isEmpty ? "/" : displayBytes(path) }

public enum ImageWriter {
    /// The format version actually used for a tree: `minVersion`, raised to 1 when
    /// the tree contains whiteouts and `maxVersion` allows it (never to 2, as in the C
    /// writer, which has no format 2: a minimum below 2 gives format 0 or 1).
    public static func effectiveVersion(for root: Inode, options: ImageOptions) -> UInt32 {
        let maxVersion = max(options.maxVersion, options.minVersion)
        guard options.minVersion < 1 && maxVersion >= 1 else { return options.minVersion }
        var stack = [root]
        while let inode = stack.popLast() {
            if inode.isWhiteout { return 1 }
            for entry in inode.entries where !entry.isHardlink { stack.append(entry.inode) }
        }
        return options.minVersion
    }

    /// Writes the image of `root`, handing it out in block-aligned chunks.
    public static func write(
        root: Inode, options: ImageOptions,
        output: (UnsafeRawBufferPointer) throws -> Void
    ) throws(ImageWriteError) {
        guard options.minVersion <= ImageOptions.maxSupportedVersion else {
            throw .unsupportedVersion(options.minVersion)
        }
        guard options.maxVersion <= ImageOptions.maxSupportedVersion else {
            throw .unsupportedVersion(options.maxVersion)
        }
        guard root.isDirectory else { throw .invalidNode(path: [], reason: "root must be a directory") }
        let version = effectiveVersion(for: root, options: options)
        if version == 2 {
            try ImageLayoutV2(root: root).emit(output: output)
            return
        }
        let layout = try ImageLayout(root: root, version: version, unsignedMtimeOrder: options.unsignedMtimeOrder)
        try layout.emit(output: output)
    }

    /// The whole image in memory.
    public static func image(root: Inode, options: ImageOptions = ImageOptions()) throws(ImageWriteError) -> [UInt8] {
        var image: [UInt8] = []
        try write(root: root, options: options) { image.append(contentsOf: $0) }
        return image
    }
}

/// One inode as written: the source inode after composefs' rewrites (overlay
/// xattrs, escaped whiteouts) plus its EROFS placement. A class: the layout
/// passes update nodes in place.
final class WriterNode {
    let source: Inode
    /// Name of the primary entry (for messages).
    let name: [UInt8]
    var mode: UInt32
    var size: UInt64
    var nlink: UInt32
    var rdev: UInt32
    var xattrs: XattrList
    /// Per xattr (sorted order): byte offset in the shared area, or -1 if inline.
    var sharedOffsets: [Int] = []
    /// Directory entries in name order, including "." and "..": (name, node index).
    var dirents: [(name: [UInt8], target: Int)] = []
    /// Nodes of the non-hardlink entries, in name order.
    var children: [Int] = []
    let parent: Int
    /// The root's 00..ff whiteouts, which composefs adds and does not rewrite.
    let added: Bool

    // Placement, as computed by `layoutInodes`.
    var compact = false
    var padding = 0
    var xattrSize = 0
    var inodeSize = 0
    var nid: UInt64 = 0
    var blockCount = 0
    var tailSize = 0

    init(source: Inode, name: [UInt8], parent: Int, added: Bool) {
        self.source = source
        self.name = name
        self.parent = parent
        self.added = added
        mode = source.mode
        size = source.isSymlink ? UInt64(source.payload?.count ?? 0) : source.size
        nlink = source.nlink
        rdev = source.rdev
        xattrs = source.xattrList
    }

    var fileType: UInt32 { mode & FileMode.typeMask }
    var hasInlineContent: Bool { source.content != nil }
}

/// The node graph in breadth-first order and everything derived from it.
struct ImageLayout {
    static let blockSize = EROFSConstants.blockSize
    static let slotSize = EROFSConstants.slotSize

    let version: UInt32
    var nodes: [WriterNode] = []
    var minMtime = Timestamp.zero
    var hasACL = false
    var sharedXattrs: [Xattr] = []
    var sharedXattrSize = 0
    var inodesEnd = 0
    var dataBlockCount = 0

    init(root: Inode, version: UInt32, unsignedMtimeOrder: Bool) throws(ImageWriteError) {
        self.version = version
        try orderBreadthFirst(root: root)
        try rewrite()
        finalizeAttributes(unsignedMtimeOrder: unsignedMtimeOrder)
        computeSharedXattrs()
        layoutInodes()
    }

    // MARK: Breadth-first order

    /// Numbers inodes breadth-first (root, its children in name order, ...), with
    /// the root's 00..ff whiteouts, and records each directory's entries.
    private mutating func orderBreadthFirst(root: Inode) throws(ImageWriteError) {
        // The root's whiteouts hide the object store's 00..ff directories when the
        // image is stacked over it; they take the root's owner, mtime and label.
        let whiteouts = Self.rootWhiteouts(root: root)
        let added = Set(whiteouts.map { ObjectIdentifier($0.inode) })
        let rootEntries = Self.merge(root.entries, whiteouts)
        nodes.append(WriterNode(source: root, name: [], parent: 0, added: false))
        var hardlinks = false
        var head = 0
        while head < nodes.count {
            let node = nodes[head]
            if node.source.isDirectory {
                let entries = head == 0 ? rootEntries : node.source.entries
                node.dirents.reserveCapacity(entries.count + 2)
                for entry in entries {
                    if entry.isHardlink {
                        hardlinks = true
                        node.dirents.append((entry.name, -1))
                        continue
                    }
                    let child = nodes.count
                    nodes.append(
                        WriterNode(source: entry.inode, name: entry.name, parent: head,
                                   added: head == 0 && added.contains(ObjectIdentifier(entry.inode))))
                    node.children.append(child)
                    node.dirents.append((entry.name, child))
                }
            }
            head += 1
        }
        if hardlinks { try resolveHardlinks(rootEntries: rootEntries) }
    }

    /// Points hard-link entries at the node of their inode.
    private func resolveHardlinks(rootEntries: [DirectoryEntry]) throws(ImageWriteError) {
        var index: [ObjectIdentifier: Int] = [:]
        index.reserveCapacity(nodes.count)
        for (i, node) in nodes.enumerated() { index[ObjectIdentifier(node.source)] = i }
        for (i, node) in nodes.enumerated() where node.source.isDirectory {
            let entries = i == 0 ? rootEntries : node.source.entries
            for (d, entry) in entries.enumerated() where entry.isHardlink {
                guard let target = index[ObjectIdentifier(entry.inode)] else {
                    throw .invalidNode(path: [], reason: "hard link '\(displayBytes(entry.name))' points outside the tree")
                }
                node.dirents[d].target = target
            }
        }
    }

    // MARK: Rewrite

    /// The composefs rewrites, applied depth-first in entry order as the reference
    /// does (the order matters for which xattr wins and for the space accounting).
    private mutating func rewrite() throws(ImageWriteError) {
        var path: [UInt8] = []
        func visit(_ i: Int) throws(ImageWriteError) {
            let node = nodes[i]
            try Self.validate(node.source, path: path)
            // Escape existing trusted.overlay.* so overlayfs doesn't interpret them.
            for (x, xattr) in node.xattrs.items.enumerated() where xattr.key.starts(with: OverlayXattr.prefix) {
                node.xattrs.rename(at: x, to: OverlayXattr.escapePrefix + xattr.key[OverlayXattr.prefix.count...])
            }
            do throws(TreeError) {
                if node.source.isRegular && node.size > 0 && node.source.content == nil {
                    let digest = node.source.digest
                    let metacopy = OverlayMetacopy(digestAlgorithm: digest?.algorithm.rawValue ?? 0, digest: digest?.bytes ?? [])
                    try node.xattrs.set(OverlayXattr.metacopy, metacopy.encoded(), external: true)
                    if let payload = node.source.payload, !payload.isEmpty {
                        try node.xattrs.set(OverlayXattr.redirect, [UInt8(ascii: "/")] + payload, external: true)
                    }
                }
                if node.source.isWhiteout {
                    // Whiteouts inside the image are escaped as empty regular files.
                    node.mode = FileMode.regular | (node.mode & ~FileMode.typeMask)
                    node.size = 0
                    try node.xattrs.set(OverlayXattr.escapedWhiteout, [], external: true)
                    try node.xattrs.set(OverlayXattr.userWhiteout, [], external: true)
                    let parent = nodes[node.parent]
                    try parent.xattrs.set(OverlayXattr.escapedWhiteouts, [], external: true)
                    try parent.xattrs.set(OverlayXattr.userWhiteouts, [], external: true)
                    if version >= 1 {
                        try parent.xattrs.set(OverlayXattr.escapedOpaque, [UInt8(ascii: "x")], external: true)
                        try parent.xattrs.set(OverlayXattr.userOpaque, [UInt8(ascii: "x")], external: true)
                    }
                }
            } catch {
                throw .invalidNode(path: path, reason: error.description)
            }
            for child in node.children where !nodes[child].added {
                let saved = path.count
                path.append(UInt8(ascii: "/"))
                path.append(contentsOf: nodes[child].name)
                try visit(child)
                path.removeSubrange(saved...)
            }
        }
        try visit(0)
        do throws(TreeError) {
            try nodes[0].xattrs.set(OverlayXattr.opaque, [UInt8(ascii: "y")], external: true)
        } catch {
            throw .invalidNode(path: [], reason: error.description)
        }
    }

    private static func validate(_ inode: Inode, path: [UInt8]) throws(ImageWriteError) {
        func fail(_ reason: String) -> ImageWriteError { .invalidNode(path: path, reason: reason) }
        guard FileMode.isValidType(inode.mode) else {
            throw fail("invalid file mode 0" + String(inode.mode, radix: 8))
        }
        if !inode.isDirectory && !inode.entries.isEmpty { throw fail("only directories can have children") }
        if inode.isSymlink {
            guard let target = inode.payload, !target.isEmpty else { throw fail("symlink has no target") }
            guard target.count < Limits.pathMax else { throw fail("symlink target longer than \(Limits.pathMax - 1) bytes") }
        }
        if inode.isRegular {
            if let content = inode.content {
                guard UInt64(content.count) == inode.size else {
                    throw fail("inline content is \(content.count) bytes but the size is \(inode.size)")
                }
                guard content.count <= Limits.inlineContentMax else {
                    throw fail("inline content larger than \(Limits.inlineContentMax) bytes")
                }
            } else if inode.size > 0 && ChunkLayout.chunkCount(fileSize: inode.size) > UInt64(ChunkLayout.maxChunks) {
                throw fail("file too big (\(inode.size) bytes)")
            }
        }
    }

    // MARK: Attributes

    /// Directory link counts, "." and "..", xattrs in canonical order, the
    /// minimum mtime (used by compact inodes) and whether any ACL is present.
    private mutating func finalizeAttributes(unsignedMtimeOrder: Bool) {
        let earlier: (Timestamp, Timestamp) -> Bool = unsignedMtimeOrder
            ? { a, b in (UInt64(bitPattern: a.seconds), a.nanoseconds) < (UInt64(bitPattern: b.seconds), b.nanoseconds) }
            : { a, b in a < b }
        minMtime = nodes[0].source.mtime
        for (i, node) in nodes.enumerated() {
            if node.source.isDirectory {
                var subdirectories = 0
                for child in node.children where nodes[child].source.isDirectory { subdirectories += 1 }
                node.nlink = UInt32(2 + subdirectories)
                Self.insertDotEntries(&node.dirents, this: i, parent: node.parent)
            }
            node.xattrs.sortByKey()
            if earlier(node.source.mtime, minMtime) { minMtime = node.source.mtime }
            if !hasACL && (node.xattrs.value(OverlayXattr.aclAccess) != nil || node.xattrs.value(OverlayXattr.aclDefault) != nil) {
                hasACL = true
            }
        }
    }

    /// Character-device whiteouts named 00..ff for the root, skipping names in use.
    private static func rootWhiteouts(root: Inode) -> [DirectoryEntry] {
        let hex = Array("0123456789abcdef".utf8)
        let selinux = root.xattr(OverlayXattr.selinux)
        var result: [DirectoryEntry] = []
        result.reserveCapacity(256)
        for i in 0..<256 {
            let name = [hex[i >> 4], hex[i & 15]]
            if root.entry(named: name) != nil { continue }
            let whiteout = Inode(mode: FileMode.characterDevice | 0o644)
            whiteout.uid = root.uid
            whiteout.gid = root.gid
            whiteout.mtime = root.mtime
            if let selinux { try? whiteout.setXattr(OverlayXattr.selinux, selinux) }
            result.append(DirectoryEntry(name: name, inode: whiteout, isHardlink: false))
        }
        return result
    }

    /// Merges two name-sorted entry lists.
    private static func merge(_ a: [DirectoryEntry], _ b: [DirectoryEntry]) -> [DirectoryEntry] {
        var result: [DirectoryEntry] = []
        result.reserveCapacity(a.count + b.count)
        var i = 0
        var j = 0
        while i < a.count && j < b.count {
            if compareBytes(a[i].name, b[j].name) < 0 {
                result.append(a[i]); i += 1
            } else {
                result.append(b[j]); j += 1
            }
        }
        result.append(contentsOf: a[i...])
        result.append(contentsOf: b[j...])
        return result
    }

    private static let dot: [UInt8] = [0x2E]
    private static let dotDot: [UInt8] = [0x2E, 0x2E]

    /// Inserts "." and ".." at their sorted positions (names like "-x" sort before them).
    static func insertDotEntries(_ dirents: inout [(name: [UInt8], target: Int)], this: Int, parent: Int) {
        for (name, target) in [(dot, this), (dotDot, parent)] {
            var low = 0
            var high = dirents.count
            while low < high {
                let mid = (low + high) / 2
                if compareBytes(dirents[mid].name, name) < 0 { low = mid + 1 } else { high = mid }
            }
            dirents.insert((name, target), at: low)
        }
    }

    // MARK: Shared xattrs

    /// Xattrs (key and value) used by more than one inode go to the shared area,
    /// in descending (key, value length, value) order.
    private mutating func computeSharedXattrs() {
        var counts: [Xattr: Int] = [:]
        for node in nodes {
            for x in node.xattrs.items { counts[x, default: 0] += 1 }
        }
        sharedXattrs = counts.compactMap { $0.value > 1 ? $0.key : nil }
        sharedXattrs.sort { a, b in
            let c = compareBytes(a.key, b.key)
            if c != 0 { return c > 0 }
            if a.value.count != b.value.count { return a.value.count > b.value.count }
            return compareBytes(a.value, b.value) > 0
        }
        var offsets: [Xattr: Int] = [:]
        offsets.reserveCapacity(sharedXattrs.count)
        var offset = 0
        for x in sharedXattrs {
            offsets[x] = offset
            offset += Self.xattrEntrySize(x)
        }
        sharedXattrSize = offset
        for i in nodes.indices {
            var shared = 0
            nodes[i].sharedOffsets = nodes[i].xattrs.items.map { x in
                if let offset = offsets[x], shared < Int(EROFSConstants.xattrLongPrefix) {
                    shared += 1
                    return offset
                }
                return -1
            }
        }
    }

    static func xattrEntrySize(_ x: Xattr) -> Int {
        XattrEntry.encodedSize(suffixLength: EROFSXattrPrefix.split(x.key).suffix.count, valueLength: x.value.count)
    }

    // MARK: Inode placement

    private mutating func layoutInodes() {
        let blockSize = Self.blockSize
        var pos = EROFSConstants.superblockOffset + Superblock.size
        let metaStart = pos & ~(blockSize - 1)
        for i in nodes.indices {
            Self.computeDataSize(nodes[i])
            nodes[i].compact = Self.fitsCompact(nodes[i], minMtime: minMtime)
            let inodeSize = nodes[i].compact ? InodeHeader.compactSize : InodeHeader.extendedSize
            var sharedCount = 0
            var unsharedSize = 0
            for (x, offset) in zip(nodes[i].xattrs.items, nodes[i].sharedOffsets) {
                if offset >= 0 { sharedCount += 1 } else { unsharedSize += Self.xattrEntrySize(x) }
            }
            let xattrSize =
                sharedCount == 0 && unsharedSize == 0
                ? 0 : (XattrBodyHeader.size + sharedCount * 4 + unsharedSize + 3) & ~3
            nodes[i].xattrSize = xattrSize

            let start = (pos + Self.slotSize - 1) & ~(Self.slotSize - 1)
            nodes[i].padding = start - pos
            pos = start
            let extra = Self.tailPadding(nodes[i], pos: pos, inodeSize: inodeSize, xattrSize: xattrSize)
            nodes[i].padding += extra
            pos += extra
            nodes[i].inodeSize = inodeSize + xattrSize + nodes[i].tailSize
            dataBlockCount += nodes[i].blockCount
            nodes[i].nid = UInt64((pos - metaStart) / Self.slotSize)
            pos += nodes[i].inodeSize
        }
        inodesEnd = (pos + Self.slotSize - 1) & ~(Self.slotSize - 1)
    }

    /// How much data goes to full blocks and how much is inlined after the inode.
    private static func computeDataSize(_ node: WriterNode) {
        let blockSize = Self.blockSize
        switch node.fileType {
        case FileMode.directory:
            let split = DirectoryBlocks(count: node.dirents.count) { node.dirents[$0].name.count }
            node.blockCount = split.blocks.count
            node.tailSize = split.tailSize
        case FileMode.symlink:
            node.blockCount = 0
            node.tailSize = node.source.payload?.count ?? 0
        case FileMode.regular where node.size > 0:
            if node.hasInlineContent {
                node.blockCount = Int(node.size) / blockSize
                node.tailSize = Int(node.size) % blockSize
                if node.tailSize > blockSize / 2 {
                    node.blockCount += 1
                    node.tailSize = 0
                }
            } else {
                node.blockCount = 0
                node.tailSize = Int(ChunkLayout.chunkCount(fileSize: node.size)) * 4
            }
        default:
            node.blockCount = 0
            node.tailSize = 0
        }
    }

    private static func fitsCompact(_ node: WriterNode, minMtime: Timestamp) -> Bool {
        guard node.source.mtime == minMtime else { return false }
        guard node.nlink <= UInt32(UInt16.max), node.source.uid <= UInt32(UInt16.max),
            node.source.gid <= UInt32(UInt16.max)
        else { return false }
        let size =
            node.fileType == FileMode.directory
            ? UInt64(node.blockCount * Self.blockSize + node.tailSize) : node.size
        return size <= UInt64(UInt32.max)
    }

    /// Padding before an inode so its inline tail does not cross a block boundary;
    /// moves the tail to a full block when it cannot fit.
    private static func tailPadding(_ node: WriterNode, pos: Int, inodeSize: Int, xattrSize: Int) -> Int {
        let blockSize = Self.blockSize
        let nonTail = inodeSize + xattrSize
        let total = nonTail + node.tailSize
        if node.fileType == FileMode.symlink {
            // A symlink's inode and target share a block when possible.
            if total / blockSize > 0 {
                node.blockCount += 1
                node.tailSize = 0
            }
            if pos / blockSize != (pos + total - 1) / blockSize {
                return roundUp(pos, blockSize) - pos
            }
            return 0
        }
        var remainder = blockSize - (pos + nonTail) % blockSize
        if remainder < node.tailSize {
            let extra = roundUp(remainder, Self.slotSize)
            remainder = blockSize - (pos + nonTail + extra) % blockSize
            if node.tailSize <= remainder { return extra }
            node.blockCount += 1
            node.tailSize = 0
            return roundUp(pos, blockSize) - pos
        }
        return 0
    }

    // MARK: Emit

    func emit(output: (UnsafeRawBufferPointer) throws -> Void) throws(ImageWriteError) {
        var out = ImageOutput()
        let blockSize = Self.blockSize

        ComposefsHeader(flags: hasACL ? ComposefsHeader.flagHasACL : 0, composefsVersion: version)
            .encode(into: &out.buffer)
        out.buffer.zeros(EROFSConstants.superblockOffset - ComposefsHeader.size)

        let dataStart = roundUp(inodesEnd + sharedXattrSize, blockSize)
        var sb = Superblock()
        sb.featureCompat = EROFSConstants.featureCompatMtime | EROFSConstants.featureCompatXattrFilter
        sb.inodeCount = UInt64(nodes.count)
        sb.buildTime = UInt64(bitPattern: minMtime.seconds)
        sb.buildTimeNsec = minMtime.nanoseconds
        sb.metaBlockAddress = UInt32((EROFSConstants.superblockOffset + Superblock.size) / blockSize)
        sb.rootNid = UInt16(truncatingIfNeeded: nodes[0].nid)
        sb.xattrBlockAddress = UInt32(inodesEnd / blockSize)
        sb.blocks = UInt32(truncatingIfNeeded: dataStart / blockSize + dataBlockCount)
        sb.encode(into: &out.buffer)

        var nextBlock = dataStart / blockSize
        for (ino, node) in nodes.enumerated() {
            try emitInode(node, ino: UInt32(truncatingIfNeeded: ino), nextBlock: &nextBlock, into: &out)
            try out.flushIfLarge(output)
        }
        out.buffer.align(to: Self.slotSize)
        for x in sharedXattrs { Self.emitXattr(x, into: &out.buffer) }
        out.buffer.align(to: blockSize)
        for node in nodes {
            emitDataBlocks(node, into: &out.buffer)
            try out.flushIfLarge(output)
        }
        try out.finish(output)
    }

    private func emitInode(_ node: WriterNode, ino: UInt32, nextBlock: inout Int, into out: inout ImageOutput) throws(ImageWriteError) {
        let blockSize = Self.blockSize
        out.buffer.zeros(node.padding)
        var layout: EROFSDataLayout = node.tailSize > 0 ? .flatInline : .flatPlain
        var size: UInt64 = 0
        var union: UInt32 = 0
        var chunkCount = 0
        func claimBlocks() {
            if node.blockCount > 0 {
                union = UInt32(truncatingIfNeeded: nextBlock)
                nextBlock += node.blockCount
            }
        }
        switch node.fileType {
        case FileMode.directory:
            size = UInt64(node.blockCount * blockSize + node.tailSize)
            claimBlocks()
        case FileMode.regular:
            size = node.size
            claimBlocks()
            if size > 0 && !node.hasInlineContent {
                let bits = ChunkLayout.chunkBits(fileSize: size)
                chunkCount = Int(ChunkLayout.chunkCount(fileSize: size))
                layout = .chunkBased
                // i_u is a union: the chunk format overwrites the low half of raw_blkaddr.
                union = (union & 0xFFFF_0000) | UInt32(bits - EROFSConstants.blockSizeBits)
            }
        case FileMode.symlink:
            size = node.blockCount == 0 ? UInt64(node.tailSize) : node.size
            claimBlocks()
        case FileMode.characterDevice, FileMode.blockDevice:
            union = node.rdev
        default:
            break
        }
        let source = node.source
        InodeHeader(
            extended: !node.compact, dataLayout: layout,
            xattrInodeCount: UInt16(truncatingIfNeeded: XattrBodyHeader.inodeCount(bodySize: node.xattrSize)),
            mode: UInt16(truncatingIfNeeded: node.mode), nlink: node.nlink, size: size, union: union,
            ino: ino, uid: source.uid, gid: source.gid,
            mtime: UInt64(bitPattern: source.mtime.seconds), mtimeNsec: source.mtime.nanoseconds
        ).encode(into: &out.buffer)

        if node.xattrSize > 0 {
            var filter: UInt32 = 0
            for x in node.xattrs.items {
                let (index, suffix) = EROFSXattrPrefix.split(x.key)
                filter |= XattrBodyHeader.filterBit(index: index, suffix: suffix)
            }
            let sharedCount = node.sharedOffsets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
            XattrBodyHeader(nameFilter: ~filter, sharedCount: UInt8(sharedCount)).encode(into: &out.buffer)
            for offset in node.sharedOffsets where offset >= 0 {
                out.buffer.u32(UInt32((inodesEnd % blockSize + offset) / 4))
            }
            for (x, offset) in zip(node.xattrs.items, node.sharedOffsets) where offset < 0 {
                Self.emitXattr(x, into: &out.buffer)
            }
        }

        switch node.fileType {
        case FileMode.directory:
            emitDirents(node, blocks: false, into: &out.buffer)
        case FileMode.symlink:
            if node.blockCount == 0, let target = node.source.payload { out.buffer.bytes(target) }
        case FileMode.regular where node.tailSize > 0:
            if let content = node.source.content {
                out.buffer.bytes(content[(content.count - node.tailSize)...])
            } else {
                ChunkIndex.encodeHoles(count: chunkCount, into: &out.buffer)
            }
        default:
            break
        }
    }

    private static func emitXattr(_ x: Xattr, into out: inout ByteWriter) {
        let (index, suffix) = EROFSXattrPrefix.split(x.key)
        XattrEntry.encode(index: index, suffix: suffix, value: x.value, into: &out)
    }

    /// Writes a directory's full blocks (`blocks`) or its inline tail (`!blocks`).
    private func emitDirents(_ node: WriterNode, blocks: Bool, into out: inout ByteWriter) {
        let split = DirectoryBlocks(count: node.dirents.count) { node.dirents[$0].name.count }
        // A tail the inode had no room for went to a block of its own (`tailPadding`).
        let tailInBlock = node.blockCount > split.blocks.count
        if blocks {
            for range in split.blocks { emitDirentChunk(node, range, alignment: Self.blockSize, into: &out) }
            if tailInBlock { emitDirentChunk(node, split.tail, alignment: Self.blockSize, into: &out) }
        } else if !tailInBlock && !split.tail.isEmpty {
            emitDirentChunk(node, split.tail, alignment: 1, into: &out)
        }
    }

    private func emitDirentChunk(_ node: WriterNode, _ range: Range<Int>, alignment: Int, into out: inout ByteWriter) {
        Dirent.encodeBlock(count: range.count, into: &out) { i in
            let d = node.dirents[range.lowerBound + i]
            return (d.name, nodes[d.target].nid, EROFSFileType(mode: nodes[d.target].mode))
        }
        out.align(to: alignment)
    }

    /// Full data blocks: directory blocks, inline file content that did not fit
    /// the tail, long symlink targets, or a chunk index too big to inline.
    private func emitDataBlocks(_ node: WriterNode, into out: inout ByteWriter) {
        let blockSize = Self.blockSize
        if node.fileType == FileMode.directory {
            emitDirents(node, blocks: true, into: &out)
            return
        }
        guard node.blockCount > 0 else { return }
        let data: [UInt8]
        switch node.fileType {
        case FileMode.regular:
            guard let content = node.source.content else {
                // The chunk index did not fit after the inode: a block of null chunks.
                ChunkIndex.encodeHoles(count: ChunkLayout.maxChunks, into: &out)
                return
            }
            data = content
        case FileMode.symlink:
            data = node.source.payload ?? []
        default:
            return
        }
        // Tails never exceed half a block, so at most one full block precedes them.
        out.bytes(data.prefix(blockSize))
        out.align(to: blockSize)
    }
}

@inline(__always) func roundUp(_ x: Int, _ alignment: Int) -> Int {
    (x + alignment - 1) & ~(alignment - 1)
}

/// How composefs cuts a directory's entries ("." and ".." included, in name order) into
/// blocks, in every format: an entry never straddles a block, and what is left over goes
/// inline after the inode unless it is more than half a block, which gets a block of its own.
struct DirectoryBlocks {
    /// Entry indexes of each full block.
    var blocks: [Range<Int>] = []
    /// Entry indexes of the inline tail (empty when there is none), and its size in bytes.
    var tail: Range<Int>
    var tailSize = 0

    init(count: Int, nameLength: (Int) -> Int) {
        let blockSize = EROFSConstants.blockSize
        var first = 0
        for i in 0..<count {
            let length = Dirent.size + nameLength(i)
            if tailSize + length > blockSize {
                blocks.append(first..<i)
                first = i
                tailSize = 0
            }
            tailSize += length
        }
        tail = first..<count
        if tailSize > blockSize / 2 {
            blocks.append(tail)
            tail = count..<count
            tailSize = 0
        }
    }

    /// The directory's i_size.
    var size: UInt64 { UInt64(blocks.count * EROFSConstants.blockSize + tailSize) }
}

/// Buffers image bytes and hands them out in whole blocks, so alignment can be
/// computed from the buffer length alone.
struct ImageOutput {
    static let flushThreshold = 1 << 20
    var buffer = ByteWriter(capacity: flushThreshold + 64 * 1024)

    typealias Sink = (UnsafeRawBufferPointer) throws -> Void

    mutating func flushIfLarge(_ sink: Sink) throws(ImageWriteError) {
        guard buffer.count >= Self.flushThreshold else { return }
        let whole = buffer.count & ~(EROFSConstants.blockSize - 1)
        try send(0..<whole, sink)
        buffer.bytes.removeSubrange(0..<whole)
    }

    mutating func finish(_ sink: Sink) throws(ImageWriteError) {
        try send(0..<buffer.count, sink)
        buffer.removeAll()
    }

    private func send(_ range: Range<Int>, _ sink: Sink) throws(ImageWriteError) {
        do {
            try buffer.bytes.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[range])) }
        } catch let error as ImageWriteError {
            throw error
        } catch {
            throw .output(error)
        }
    }
}
