// On-disk structures of EROFS as used by composefs images, each with its encoder and decoder,
// and the overlayfs xattrs composefs stores in them: every field layout in one place. Field
// names follow the kernel's erofs_fs.h and overlayfs; every integer is little-endian.

import ComposeFSBase

/// Format constants.
public enum EROFSConstants {
    public static let blockSizeBits = 12
    public static let blockSize = 1 << blockSizeBits
    /// Inodes are addressed in 32-byte slots ("nid" = slot index from meta_blkaddr).
    public static let slotSizeBits = 5
    public static let slotSize = 1 << slotSizeBits
    /// The superblock lives at this byte offset of the image.
    public static let superblockOffset = 1024
    public static let superMagic: UInt32 = 0xE0F5_E1E2

    public static let featureCompatSuperblockChecksum: UInt32 = 0x1
    public static let featureCompatMtime: UInt32 = 0x2
    public static let featureCompatXattrFilter: UInt32 = 0x4

    /// Chunk-based files: chunk size is `blockSize << (format & chunkFormatBlockBitsMask)`.
    public static let chunkFormatBlockBitsMask: UInt16 = 0x1F
    public static let chunkFormatIndexes: UInt16 = 0x20
    /// A chunk address meaning "hole" (composefs files have no data in the image).
    public static let nullAddress: UInt32 = 0xFFFF_FFFF

    public static let maxNameLength = 255

    public static let xattrFilterBits: UInt32 = 32
    public static let xattrFilterSeed: UInt32 = 0x25BB_E08F
    /// Highest bit of e_name_index marks a long-prefix index; composefs never uses them,
    /// and the count of shared xattrs per inode stays below it.
    public static let xattrLongPrefix: UInt8 = 0x80
}

/// i_format data layouts.
public enum EROFSDataLayout: UInt16, Sendable {
    case flatPlain = 0
    case compressedFull = 1
    case flatInline = 2
    case compressedCompact = 3
    case chunkBased = 4
}

/// Directory entry file types.
public enum EROFSFileType: UInt8, Sendable {
    case unknown = 0, regular, directory, characterDevice, blockDevice, fifo, socket, symlink

    /// The EROFS type of a POSIX st_mode.
    public init(mode: UInt32) {
        switch mode & FileMode.typeMask {
        case FileMode.regular: self = .regular
        case FileMode.directory: self = .directory
        case FileMode.characterDevice: self = .characterDevice
        case FileMode.blockDevice: self = .blockDevice
        case FileMode.fifo: self = .fifo
        case FileMode.socket: self = .socket
        case FileMode.symlink: self = .symlink
        default: self = .unknown
        }
    }
}

/// POSIX st_mode file type bits (identical on every Linux architecture).
public enum FileMode {
    public static let typeMask: UInt32 = 0o170000
    public static let socket: UInt32 = 0o140000
    public static let symlink: UInt32 = 0o120000
    public static let regular: UInt32 = 0o100000
    public static let blockDevice: UInt32 = 0o060000
    public static let directory: UInt32 = 0o040000
    public static let characterDevice: UInt32 = 0o020000
    public static let fifo: UInt32 = 0o010000

    /// True for the seven file types composefs can represent.
    public static func isValidType(_ mode: UInt32) -> Bool {
        switch mode & typeMask {
        case socket, symlink, regular, blockDevice, directory, characterDevice, fifo: return true
        default: return false
        }
    }
}

/// The xattr name prefixes EROFS stores as a one-byte index.
public enum EROFSXattrPrefix {
    /// Index → prefix; index 0 means the full name is stored.
    public static let prefixes: [[UInt8]] = [
        [],
        Array("user.".utf8),
        Array("system.posix_acl_access".utf8),
        Array("system.posix_acl_default".utf8),
        Array("trusted.".utf8),
        Array("lustre.".utf8),
        Array("security.".utf8),
    ]

    public static let user: UInt8 = 1
    public static let aclAccess: UInt8 = 2
    public static let aclDefault: UInt8 = 3
    public static let trusted: UInt8 = 4

    /// The prefixes a writer abbreviates, in the order they are tried. `lustre.` is
    /// readable but never written, as the reference writer does.
    public static let writable: [UInt8] = [1, 2, 3, 4, 6]
    /// The prefixes a full name is matched against when looking it up, which are also those
    /// composefs-rs's format 2 abbreviates (no prefix starts another, so the order is free).
    public static let readable: [UInt8] = [1, 2, 3, 4, 5, 6]

    /// The first of `candidates` whose prefix starts `name`, and where the rest of the name
    /// starts (index 0 and the whole name when none matches).
    @inline(__always)
    public static func match<Name: Collection<UInt8>>(_ name: Name, among candidates: [UInt8]) -> (index: UInt8, suffixStart: Name.Index) {
        for index in candidates {
            let prefix = prefixes[Int(index)]
            if name.starts(with: prefix) { return (index, name.index(name.startIndex, offsetBy: prefix.count)) }
        }
        return (0, name.startIndex)
    }

    /// Splits a full xattr name into (index, suffix) the way composefs writes it (format 2
    /// passes `readable`).
    public static func split(_ name: [UInt8], among candidates: [UInt8] = writable) -> (index: UInt8, suffix: ArraySlice<UInt8>) {
        let (index, start) = match(name, among: candidates)
        return (index, name[start...])
    }
}

/// The 32-byte header composefs puts at offset 0 of its EROFS images (the
/// superblock starts at 1024, so EROFS ignores it).
public struct ComposefsHeader: Equatable, Sendable {
    public static let size = 32
    public static let magic: UInt32 = 0xD078_629A
    /// Version of this header layout.
    public static let headerVersion: UInt32 = 1
    public static let flagHasACL: UInt32 = 1 << 0
    /// The newest composefs format version: 0 and 1 are the C writer's, 2 composefs-rs's own.
    public static let maxComposefsVersion: UInt32 = 2

    public var magic: UInt32 = ComposefsHeader.magic
    public var version: UInt32 = ComposefsHeader.headerVersion
    public var flags: UInt32 = 0
    /// The composefs image format version (0, 1 or 2).
    public var composefsVersion: UInt32 = 0
    // 4 unused le32 follow.

    public init(flags: UInt32, composefsVersion: UInt32) {
        self.flags = flags
        self.composefsVersion = composefsVersion
    }

    public func encode(into out: inout ByteWriter) {
        out.u32(magic)
        out.u32(version)
        out.u32(flags)
        out.u32(composefsVersion)
        out.zeros(16)
    }

    public init(decoding bytes: ByteReader) throws(OutOfBounds) {
        magic = try bytes.u32(at: 0)
        version = try bytes.u32(at: 4)
        flags = try bytes.u32(at: 8)
        composefsVersion = try bytes.u32(at: 12)
    }
}

/// erofs_super_block (128 bytes at offset 1024).
public struct Superblock: Equatable, Sendable {
    public static let size = 128

    public var magic: UInt32 = EROFSConstants.superMagic
    public var checksum: UInt32 = 0
    public var featureCompat: UInt32 = 0
    public var blockSizeBits: UInt8 = UInt8(EROFSConstants.blockSizeBits)
    public var superblockExtraSlots: UInt8 = 0
    public var rootNid: UInt16 = 0
    /// Total number of inodes.
    public var inodeCount: UInt64 = 0
    /// Timestamp of every compact inode.
    public var buildTime: UInt64 = 0
    public var buildTimeNsec: UInt32 = 0
    /// Total blocks, for statfs.
    public var blocks: UInt32 = 0
    /// First block of the inode area (nids are slot offsets from here).
    public var metaBlockAddress: UInt32 = 0
    /// First block of the shared xattr area (shared xattr ids are 4-byte offsets from here).
    public var xattrBlockAddress: UInt32 = 0
    public var uuid: [UInt8] = Array(repeating: 0, count: 16)
    public var volumeName: [UInt8] = Array(repeating: 0, count: 16)
    public var featureIncompat: UInt32 = 0
    // u1 (le16), extra_devices (le16), devt_slotoff (le16), dirblkbits (u8),
    // xattr_prefix_count (u8), xattr_prefix_start (le32), packed_nid (le64),
    // xattr_filter_reserved (u8) and 23 reserved bytes follow; composefs writes zeros.
    public var extraDevices: UInt16 = 0
    public var directoryBlockBits: UInt8 = 0
    public var xattrPrefixCount: UInt8 = 0

    public init() {}

    public func encode(into out: inout ByteWriter) {
        out.u32(magic)
        out.u32(checksum)
        out.u32(featureCompat)
        out.u8(blockSizeBits)
        out.u8(superblockExtraSlots)
        out.u16(rootNid)
        out.u64(inodeCount)
        out.u64(buildTime)
        out.u32(buildTimeNsec)
        out.u32(blocks)
        out.u32(metaBlockAddress)
        out.u32(xattrBlockAddress)
        out.bytes(uuid)
        out.bytes(volumeName)
        out.u32(featureIncompat)
        out.u16(0)  // u1
        out.u16(extraDevices)
        out.u16(0)  // devt_slotoff
        out.u8(directoryBlockBits)
        out.u8(xattrPrefixCount)
        out.u32(0)  // xattr_prefix_start
        out.u64(0)  // packed_nid
        out.u8(0)  // xattr_filter_reserved
        out.zeros(23)
    }

    /// Decodes the superblock at `EROFSConstants.superblockOffset` of an image.
    public init(decoding image: ByteReader) throws(OutOfBounds) {
        let r = ByteReader(try image.slice(at: EROFSConstants.superblockOffset, count: Self.size))
        magic = try r.u32(at: 0)
        checksum = try r.u32(at: 4)
        featureCompat = try r.u32(at: 8)
        blockSizeBits = try r.u8(at: 12)
        superblockExtraSlots = try r.u8(at: 13)
        rootNid = try r.u16(at: 14)
        inodeCount = try r.u64(at: 16)
        buildTime = try r.u64(at: 24)
        buildTimeNsec = try r.u32(at: 32)
        blocks = try r.u32(at: 36)
        metaBlockAddress = try r.u32(at: 40)
        xattrBlockAddress = try r.u32(at: 44)
        uuid = try r.bytes(at: 48, count: 16)
        volumeName = try r.bytes(at: 64, count: 16)
        featureIncompat = try r.u32(at: 80)
        extraDevices = try r.u16(at: 86)
        directoryBlockBits = try r.u8(at: 90)
        xattrPrefixCount = try r.u8(at: 91)
    }
}

/// The fields shared by erofs_inode_compact (32 bytes) and erofs_inode_extended (64 bytes).
public struct InodeHeader: Equatable, Sendable {
    public static let compactSize = 32
    public static let extendedSize = 64

    public var extended: Bool
    public var dataLayout: UInt16
    public var xattrInodeCount: UInt16
    public var mode: UInt16
    public var nlink: UInt32
    public var size: UInt64
    /// i_u: raw_blkaddr, rdev, or chunk info (format in the low 16 bits), depending on type.
    public var union: UInt32
    public var ino: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Only stored in extended inodes; compact ones use the superblock's build time.
    public var mtime: UInt64
    public var mtimeNsec: UInt32

    public init(
        extended: Bool, dataLayout: EROFSDataLayout, xattrInodeCount: UInt16, mode: UInt16,
        nlink: UInt32, size: UInt64, union: UInt32, ino: UInt32, uid: UInt32, gid: UInt32,
        mtime: UInt64, mtimeNsec: UInt32
    ) {
        self.extended = extended
        self.dataLayout = dataLayout.rawValue
        self.xattrInodeCount = xattrInodeCount
        self.mode = mode
        self.nlink = nlink
        self.size = size
        self.union = union
        self.ino = ino
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.mtimeNsec = mtimeNsec
    }

    public var encodedSize: Int { extended ? Self.extendedSize : Self.compactSize }

    /// i_format: bit 0 = extended, bits 1-3 = data layout.
    public var format: UInt16 { (dataLayout << 1) | (extended ? 1 : 0) }

    public func encode(into out: inout ByteWriter) {
        out.u16(format)
        out.u16(xattrInodeCount)
        out.u16(mode)
        if extended {
            out.u16(0)  // i_reserved
            out.u64(size)
            out.u32(union)
            out.u32(ino)
            out.u32(uid)
            out.u32(gid)
            out.u64(mtime)
            out.u32(mtimeNsec)
            out.u32(nlink)
            out.zeros(16)
        } else {
            out.u16(UInt16(truncatingIfNeeded: nlink))
            out.u32(UInt32(truncatingIfNeeded: size))
            out.u32(0)  // i_reserved
            out.u32(union)
            out.u32(ino)
            out.u16(UInt16(truncatingIfNeeded: uid))
            out.u16(UInt16(truncatingIfNeeded: gid))
            out.u32(0)  // i_reserved2
        }
    }

    /// Decodes the inode at `offset`; compact inodes take their mtime from the superblock.
    public init(decoding r: ByteReader, at offset: Int, buildTime: UInt64, buildTimeNsec: UInt32) throws(OutOfBounds) {
        let format = try r.u16(at: offset)
        extended = format & 1 == 1
        dataLayout = (format >> 1) & 0x7
        xattrInodeCount = try r.u16(at: offset + 2)
        mode = try r.u16(at: offset + 4)
        if extended {
            size = try r.u64(at: offset + 8)
            union = try r.u32(at: offset + 16)
            ino = try r.u32(at: offset + 20)
            uid = try r.u32(at: offset + 24)
            gid = try r.u32(at: offset + 28)
            mtime = try r.u64(at: offset + 32)
            mtimeNsec = try r.u32(at: offset + 40)
            nlink = try r.u32(at: offset + 44)
        } else {
            nlink = UInt32(try r.u16(at: offset + 6))
            size = UInt64(try r.u32(at: offset + 8))
            union = try r.u32(at: offset + 16)
            ino = try r.u32(at: offset + 20)
            uid = UInt32(try r.u16(at: offset + 24))
            gid = UInt32(try r.u16(at: offset + 26))
            mtime = buildTime
            mtimeNsec = buildTimeNsec
        }
    }
}

/// erofs_xattr_ibody_header (12 bytes), followed by h_shared_count le32 shared xattr ids.
public struct XattrBodyHeader: Equatable, Sendable {
    public static let size = 12

    /// h_name_filter: bit n set means no xattr's name hashes to n (an inverted bloom filter).
    public var nameFilter: UInt32
    /// h_shared_count: shared xattr ids following the header.
    public var sharedCount: UInt8

    public init(nameFilter: UInt32, sharedCount: UInt8) {
        self.nameFilter = nameFilter
        self.sharedCount = sharedCount
    }

    /// Size of the inline xattr area for an i_xattr_icount.
    public static func bodySize(inodeCount: UInt16) -> Int {
        inodeCount == 0 ? 0 : size + (Int(inodeCount) - 1) * 4
    }

    /// i_xattr_icount for an inline xattr area of `bodySize` bytes.
    public static func inodeCount(bodySize: Int) -> Int {
        bodySize == 0 ? 0 : (bodySize - size) / 4 + 1
    }

    /// The name filter bit of an xattr stored under prefix `index` with `suffix`.
    @inline(__always)
    public static func filterBit(index: UInt8, suffix: ArraySlice<UInt8>) -> UInt32 {
        let hash = XXHash32.hash(suffix, seed: EROFSConstants.xattrFilterSeed &+ UInt32(index))
        return 1 << (hash & (EROFSConstants.xattrFilterBits - 1))
    }

    public func encode(into out: inout ByteWriter) {
        out.u32(nameFilter)
        out.u8(sharedCount)
        out.zeros(7)
    }

    public init(decoding r: ByteReader, at offset: Int) throws(OutOfBounds) {
        try r.check(offset, Self.size)
        nameFilter = try r.u32(at: offset)
        sharedCount = try r.u8(at: offset + 4)
    }

    /// The shared xattr id `index` (a 4-byte unit offset into the shared area) of the header at `offset`.
    public static func sharedID(_ r: ByteReader, header offset: Int, index: Int) throws(OutOfBounds) -> UInt32 {
        try r.u32(at: offset + size + index * 4)
    }
}

/// erofs_xattr_entry (4 bytes) followed by the name suffix and value, padded to 4 bytes.
public struct XattrEntry: Equatable, Sendable {
    public static let headerSize = 4

    /// e_name_len: bytes of the name suffix.
    public var nameLength: UInt8
    /// e_name_index: the prefix (`EROFSXattrPrefix`).
    public var nameIndex: UInt8
    /// e_value_size.
    public var valueLength: UInt16

    public static func encodedSize(suffixLength: Int, valueLength: Int) -> Int {
        (headerSize + suffixLength + valueLength + 3) & ~3
    }

    public var encodedSize: Int { Self.encodedSize(suffixLength: Int(nameLength), valueLength: Int(valueLength)) }

    public static func encode(index: UInt8, suffix: ArraySlice<UInt8>, value: [UInt8], into out: inout ByteWriter) {
        out.u8(UInt8(truncatingIfNeeded: suffix.count))
        out.u8(index)
        out.u16(UInt16(truncatingIfNeeded: value.count))
        out.bytes(suffix)
        out.bytes(value)
        out.align(to: 4)
    }

    /// Decodes the entry header at `offset`; the caller checks the name and value fit.
    public init(decoding r: ByteReader, at offset: Int) throws(OutOfBounds) {
        try r.check(offset, Self.headerSize)
        nameLength = try r.u8(at: offset)
        nameIndex = try r.u8(at: offset + 1)
        valueLength = try r.u16(at: offset + 2)
    }
}

/// erofs_dirent (12 bytes): names follow all dirents of a block, without terminators.
public struct Dirent: Equatable, Sendable {
    public static let size = 12

    public var nid: UInt64
    /// nameoff: where the name starts, from the start of the block.
    public var nameOffset: UInt16
    public var fileType: UInt8

    public static func encode(nid: UInt64, nameOffset: UInt16, fileType: EROFSFileType, into out: inout ByteWriter) {
        out.u64(nid)
        out.u16(nameOffset)
        out.u8(fileType.rawValue)
        out.u8(0)
    }

    /// One directory block, or a directory's inline tail: the `count` dirents, then their
    /// names back to back (name offsets count from the start of the block).
    public static func encodeBlock(
        count: Int, into out: inout ByteWriter, _ entry: (Int) -> (name: [UInt8], nid: UInt64, fileType: EROFSFileType)
    ) {
        var nameOffset = count * size
        for i in 0..<count {
            let (name, nid, fileType) = entry(i)
            encode(nid: nid, nameOffset: UInt16(truncatingIfNeeded: nameOffset), fileType: fileType, into: &out)
            nameOffset += name.count
        }
        for i in 0..<count { out.bytes(entry(i).name) }
    }

    public init(decoding r: ByteReader, at offset: Int) throws(OutOfBounds) {
        try r.check(offset, Self.size)
        nid = try r.u64(at: offset)
        nameOffset = try r.u16(at: offset + 8)
        fileType = try r.u8(at: offset + 10)
    }
}

/// The block map of a chunk-based inode without chunk indexes: one le32 block address per
/// chunk. composefs files have their data elsewhere, so every chunk is a hole.
public enum ChunkIndex {
    public static let entrySize = 4

    public static func encodeHoles(count: Int, into out: inout ByteWriter) {
        for _ in 0..<count { out.u32(EROFSConstants.nullAddress) }
    }

    public static func decode(_ r: ByteReader, at offset: Int, count: Int) throws(OutOfBounds) -> [UInt32] {
        try r.check(offset, count * entrySize)
        var addresses: [UInt32] = []
        addresses.reserveCapacity(count)
        for i in 0..<count { addresses.append(try r.u32(at: offset + i * entrySize)) }
        return addresses
    }
}

/// Chunk layout of composefs' external files: as few chunks as possible (at most
/// 1024 fit the one-block index composefs allows), each at least one block.
public enum ChunkLayout {
    public static let maxChunks = 1024

    /// log2 of the chunk size for a file of `fileSize` bytes.
    public static func chunkBits(fileSize: UInt64) -> Int {
        let below = fileSize &- 1
        let log2 = below == 0 ? 0 : 63 - below.leadingZeroBitCount
        var bits = log2 + 1
        if bits < EROFSConstants.blockSizeBits { bits = EROFSConstants.blockSizeBits }
        if bits - EROFSConstants.blockSizeBits > Int(EROFSConstants.chunkFormatBlockBitsMask) {
            bits = Int(EROFSConstants.chunkFormatBlockBitsMask) + EROFSConstants.blockSizeBits
        }
        return bits
    }

    public static func chunkCount(fileSize: UInt64) -> UInt64 {
        let chunkSize = UInt64(1) << UInt64(chunkBits(fileSize: fileSize))
        return fileSize / chunkSize + (fileSize % chunkSize == 0 ? 0 : 1)
    }
}

/// overlayfs's struct ovl_metacopy, the value of trusted.overlay.metacopy: version 0, its own
/// length, flags 0, then the fs-verity algorithm and digest of the backing file (or nothing
/// when none is recorded).
public struct OverlayMetacopy: Equatable, Sendable {
    public static let headerSize = 4

    /// FS_VERITY_HASH_ALG_*, 0 when there is no digest.
    public var digestAlgorithm: UInt8
    public var digest: [UInt8]

    public init(digestAlgorithm: UInt8, digest: [UInt8]) {
        self.digestAlgorithm = digestAlgorithm
        self.digest = digest
    }

    public func encoded() -> [UInt8] {
        guard !digest.isEmpty else { return [] }
        return [0, UInt8(truncatingIfNeeded: Self.headerSize + digest.count), 0, digestAlgorithm] + digest
    }

    /// nil for a value too short to be a metacopy record (an empty value is one without a
    /// digest). Like overlayfs and the reference reader, only the size tells the digest.
    public init?(decoding value: some Collection<UInt8>) {
        let bytes = Array(value)
        if bytes.isEmpty {
            self.init(digestAlgorithm: 0, digest: [])
            return
        }
        guard bytes.count >= Self.headerSize else { return nil }
        self.init(digestAlgorithm: bytes[3], digest: Array(bytes[Self.headerSize...]))
    }
}

/// The overlayfs xattr names composefs writes, escapes or reads.
public enum OverlayXattr {
    public static let prefix = Array("trusted.overlay.".utf8)
    public static let escapePrefix = Array("trusted.overlay.overlay.".utf8)
    public static let metacopy = Array("trusted.overlay.metacopy".utf8)
    public static let redirect = Array("trusted.overlay.redirect".utf8)
    public static let opaque = Array("trusted.overlay.opaque".utf8)
    public static let escapedWhiteout = Array("trusted.overlay.overlay.whiteout".utf8)
    public static let escapedWhiteouts = Array("trusted.overlay.overlay.whiteouts".utf8)
    public static let escapedOpaque = Array("trusted.overlay.overlay.opaque".utf8)
    public static let userWhiteout = Array("user.overlay.whiteout".utf8)
    public static let userWhiteouts = Array("user.overlay.whiteouts".utf8)
    public static let userOpaque = Array("user.overlay.opaque".utf8)
    public static let aclAccess = Array("system.posix_acl_access".utf8)
    public static let aclDefault = Array("system.posix_acl_default".utf8)
    public static let selinux = Array("security.selinux".utf8)
    /// The suffixes of the redirect and metacopy names under the trusted. prefix index.
    public static let redirectSuffix = Array("overlay.redirect".utf8)
    public static let metacopySuffix = Array("overlay.metacopy".utf8)
}
