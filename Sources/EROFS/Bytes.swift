// Little-endian byte encoding and bounds-checked decoding.

/// Appends little-endian integers and raw bytes to a growable buffer.
public struct ByteWriter: Sendable {
    public var bytes: [UInt8]

    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public var count: Int { bytes.count }

    @inline(__always) public mutating func u8(_ v: UInt8) { bytes.append(v) }

    @inline(__always) public mutating func u16(_ v: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: v))
        bytes.append(UInt8(truncatingIfNeeded: v >> 8))
    }

    @inline(__always) public mutating func u32(_ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    @inline(__always) public mutating func u64(_ v: UInt64) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func bytes(_ data: some Collection<UInt8>) { bytes.append(contentsOf: data) }

    public mutating func zeros(_ n: Int) {
        if n > 0 { bytes.append(contentsOf: repeatElement(0, count: n)) }
    }

    /// Pads with zeros up to the next multiple of `alignment` (a power of two).
    public mutating func align(to alignment: Int) {
        zeros((alignment - bytes.count & (alignment - 1)) & (alignment - 1))
    }

    public mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }
}

/// Bounds-checked little-endian reads from an immutable byte buffer.
public struct ByteReader: @unchecked Sendable {
    public let base: UnsafeRawBufferPointer

    public init(_ base: UnsafeRawBufferPointer) { self.base = base }

    public var count: Int { base.count }

    @inline(__always) func check(_ offset: Int, _ length: Int) throws(EROFSFormatError) {
        guard offset >= 0, length >= 0, offset <= base.count, length <= base.count - offset else {
            throw .outOfBounds(offset: offset, length: length, size: base.count)
        }
    }

    public func u8(at offset: Int) throws(EROFSFormatError) -> UInt8 {
        try check(offset, 1)
        return base[offset]
    }

    public func u16(at offset: Int) throws(EROFSFormatError) -> UInt16 {
        try check(offset, 2)
        return UInt16(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    public func u32(at offset: Int) throws(EROFSFormatError) -> UInt32 {
        try check(offset, 4)
        return UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    public func u64(at offset: Int) throws(EROFSFormatError) -> UInt64 {
        try check(offset, 8)
        return UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    public func bytes(at offset: Int, count: Int) throws(EROFSFormatError) -> [UInt8] {
        try check(offset, count)
        return Array(base[offset..<offset + count])
    }

    public func slice(at offset: Int, count: Int) throws(EROFSFormatError) -> UnsafeRawBufferPointer {
        try check(offset, count)
        return UnsafeRawBufferPointer(rebasing: base[offset..<offset + count])
    }
}
