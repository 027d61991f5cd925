// Little-endian encoding and bounds-checked decoding of on-disk records, and the byte-buffer
// helpers that keep a typed error across a closure.

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

/// A read that would go past the end of the buffer.
public struct OutOfBounds: Error, Equatable, Sendable, CustomStringConvertible {
    public var offset: Int
    public var length: Int
    public var size: Int

    public var description: String {
        "read of \(length) bytes at offset \(offset) is past the end (\(size) bytes)"
    }
}

/// Bounds-checked little-endian reads from an immutable byte buffer.
public struct ByteReader: @unchecked Sendable {
    public let base: UnsafeRawBufferPointer

    public init(_ base: UnsafeRawBufferPointer) { self.base = base }

    public var count: Int { base.count }

    /// Whether `length` bytes at `offset` are inside the buffer.
    @inline(__always) public func contains(_ offset: Int, _ length: Int) -> Bool {
        offset >= 0 && length >= 0 && offset <= base.count && length <= base.count - offset
    }

    @inline(__always) public func check(_ offset: Int, _ length: Int) throws(OutOfBounds) {
        guard contains(offset, length) else { throw OutOfBounds(offset: offset, length: length, size: base.count) }
    }

    @inline(__always) public func u8(at offset: Int) throws(OutOfBounds) -> UInt8 {
        try check(offset, 1)
        return base[offset]
    }

    @inline(__always) public func u16(at offset: Int) throws(OutOfBounds) -> UInt16 {
        try check(offset, 2)
        return UInt16(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always) public func u32(at offset: Int) throws(OutOfBounds) -> UInt32 {
        try check(offset, 4)
        return UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    @inline(__always) public func u64(at offset: Int) throws(OutOfBounds) -> UInt64 {
        try check(offset, 8)
        return UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    public func bytes(at offset: Int, count: Int) throws(OutOfBounds) -> [UInt8] {
        Array(try slice(at: offset, count: count))
    }

    public func slice(at offset: Int, count: Int) throws(OutOfBounds) -> UnsafeRawBufferPointer {
        try check(offset, count)
        return UnsafeRawBufferPointer(rebasing: base[offset..<offset + count])
    }
}

/// `withUnsafeBytes` that keeps the body's typed error (the standard one rethrows `any Error`).
@inlinable
public func withBytes<Bytes: ByteStorage, R, E: Error>(
    _ bytes: Bytes, _ body: (UnsafeRawBufferPointer) throws(E) -> R
) throws(E) -> R {
    let result: Result<R, E> = bytes.withUnsafeBytes { buffer in
        do throws(E) { return .success(try body(buffer)) } catch { return .failure(error) }
    }
    return try result.get()
}

/// `withUnsafeMutableBytes` that keeps the body's typed error.
@inlinable
public func withMutableBytes<R, E: Error>(
    _ bytes: inout [UInt8], _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
) throws(E) -> R {
    let result: Result<R, E> = bytes.withUnsafeMutableBytes { buffer in
        do throws(E) { return .success(try body(buffer)) } catch { return .failure(error) }
    }
    return try result.get()
}

/// Byte collections whose bytes lie in one piece of memory.
public protocol ByteStorage {
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ByteStorage where Element == UInt8 {}
extension ArraySlice: ByteStorage where Element == UInt8 {}
extension UnsafeRawBufferPointer: ByteStorage {
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try body(self) }
}

/// Byte-wise comparison with memcmp semantics (unsigned, the shorter of a common prefix first).
@inline(__always)
public func compareBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let n = min(a.count, b.count)
    if n > 0, let pa = a.baseAddress, let pb = b.baseAddress {
        let c = memcmp(pa, pb, n)
        if c != 0 { return Int(c) }
    }
    return a.count - b.count
}

@inline(__always)
public func compareBytes(_ a: [UInt8], _ b: [UInt8]) -> Int {
    a.withUnsafeBytes { pa in b.withUnsafeBytes { pb in compareBytes(pa, pb) } }
}

/// Renders bytes for a message: printable ASCII as is, the rest \xNN-escaped.
public func displayBytes(_ bytes: some Sequence<UInt8>) -> String {
    var text = ""
    for byte in bytes {
        if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
            text.unicodeScalars.append(Unicode.Scalar(byte))
        } else {
            text += "\\x" + (byte < 0x10 ? "0" : "") + String(byte, radix: 16)
        }
    }
    return text
}

#if canImport(Glibc)
import Glibc
#endif
