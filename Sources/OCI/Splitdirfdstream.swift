// The splitdirfdstream-v0 format (composefs-rs 0.9's composefs-splitdirfdstream crate), in
// which a layer's tar travels between varlink services: its bytes, except that a file whose
// content already lives in a directory the receiver was handed (by descriptor) is named
// instead of sent. A stream is chunks, nothing before or after them, integers little-endian:
//
//   0x00  Metadata        u32 length, then that many bytes (tar headers, padding); never empty
//   0x01  InlineData      u32 length, then that many bytes (a file's content; may be empty)
//   0x02  FileBackedData  u64 content length, u32 directory index, u32 name length, then the
//                         name: the first `content length` bytes of the file NAME below
//                         directory number INDEX (a relative path, no `..`, no NUL)
//
// The stream ends where its data ends, between two chunks; anything else (a cut chunk, an
// unknown type, a body over 256 MiB, a name over 4096 bytes) is an error.

import ComposeFSBase

#if canImport(Glibc)
import Glibc
#endif

public enum SplitdirfdChunk: Equatable, Sendable {
    case metadata([UInt8])
    case inlineData([UInt8])
    case fileBacked(directory: UInt32, length: UInt64, name: [UInt8])

    /// The largest Metadata or InlineData body.
    public static let maximumBodySize = 256 << 20
    public static let maximumNameLength = 4096

    /// The chunk's bytes (none for empty metadata, which is never sent).
    public var encoded: [UInt8] {
        var writer = ByteWriter()
        switch self {
        case let .metadata(bytes) where bytes.isEmpty:
            return []
        case let .metadata(bytes), let .inlineData(bytes):
            if case .metadata = self { writer.u8(0) } else { writer.u8(1) }
            writer.u32(UInt32(bytes.count))
            writer.bytes(bytes)
        case let .fileBacked(directory, length, name):
            writer.u8(2)
            writer.u64(length)
            writer.u32(directory)
            writer.u32(UInt32(name.count))
            writer.bytes(name)
        }
        return writer.bytes
    }

    /// Why `name` cannot name a file below a directory, or nil when it can.
    public static func nameProblem(_ name: [UInt8]) -> String? {
        if name.isEmpty { return "empty filename" }
        if name.count > maximumNameLength { return "filename length \(name.count) exceeds maximum \(maximumNameLength)" }
        if name.contains(0) { return "embedded NUL" }
        if name.first == UInt8(ascii: "/") { return "absolute path" }
        if name.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).contains(where: { $0.elementsEqual("..".utf8) }) {
            return "`..` component"
        }
        return nil
    }
}

public enum SplitdirfdError: Error, Sendable, CustomStringConvertible {
    /// The stream ended inside a chunk.
    case truncated(offset: UInt64)
    case unknownChunkType(UInt8, offset: UInt64)
    case bodyTooLarge(UInt32, offset: UInt64)
    case nameTooLong(UInt32, offset: UInt64)
    case system(SystemError)

    public var description: String {
        switch self {
        case let .truncated(offset): "splitdirfdstream: truncated chunk at byte \(offset)"
        case let .unknownChunkType(type, offset): "splitdirfdstream: unknown chunk type byte 0x\(Hex.encode([type])) at byte \(offset)"
        case let .bodyTooLarge(size, offset):
            "splitdirfdstream: chunk at byte \(offset): inline chunk size \(size) exceeds maximum \(SplitdirfdChunk.maximumBodySize)"
        case let .nameTooLong(length, offset):
            "splitdirfdstream: chunk at byte \(offset): filename length \(length) exceeds maximum \(SplitdirfdChunk.maximumNameLength)"
        case let .system(error): "splitdirfdstream: \(error)"
        }
    }
}

/// Where a layer's chunks come from: a stream read from a descriptor, or chunks at hand.
public protocol SplitdirfdChunkSource {
    mutating func nextChunk() throws(SplitdirfdError) -> SplitdirfdChunk?
}

/// Chunks already in memory (a layer taken from another repository in the same process).
public struct SplitdirfdChunkList: SplitdirfdChunkSource {
    var chunks: [SplitdirfdChunk]
    var index = 0

    public init(_ chunks: [SplitdirfdChunk]) { self.chunks = chunks }

    public mutating func nextChunk() throws(SplitdirfdError) -> SplitdirfdChunk? {
        guard index < chunks.count else { return nil }
        defer { index += 1 }
        return chunks[index]
    }
}

/// Reads chunks from a descriptor (a pipe), a body's memory growing only with what arrives.
public struct SplitdirfdReader: SplitdirfdChunkSource {
    let fd: Int32
    let path: String
    private var buffer: [UInt8] = []
    private var start = 0
    private var ended = false
    /// Bytes of the stream consumed, for error messages.
    private var offset: UInt64 = 0

    public init(fileDescriptor fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    public mutating func nextChunk() throws(SplitdirfdError) -> SplitdirfdChunk? {
        let chunkOffset = offset
        guard try fill(1, allowEnd: true) else { return nil }
        let type = take(1)[0]
        switch type {
        case 0, 1:
            _ = try fill(4, allowEnd: false)
            let length = littleEndian(take(4))
            guard length <= SplitdirfdChunk.maximumBodySize else { throw .bodyTooLarge(UInt32(length), offset: chunkOffset) }
            _ = try fill(Int(length), allowEnd: false)
            let body = take(Int(length))
            return type == 0 ? .metadata(body) : .inlineData(body)
        case 2:
            _ = try fill(16, allowEnd: false)
            let header = take(16)
            let length = littleEndian(header[0..<8])
            let directory = UInt32(littleEndian(header[8..<12]))
            let nameLength = littleEndian(header[12..<16])
            guard nameLength <= SplitdirfdChunk.maximumNameLength else { throw .nameTooLong(UInt32(nameLength), offset: chunkOffset) }
            _ = try fill(Int(nameLength), allowEnd: false)
            return .fileBacked(directory: directory, length: length, name: take(Int(nameLength)))
        default:
            throw .unknownChunkType(type, offset: chunkOffset)
        }
    }

    /// Reads until `count` bytes are buffered; false at the end of the stream when that is
    /// allowed there (nothing buffered, between chunks).
    private mutating func fill(_ count: Int, allowEnd: Bool) throws(SplitdirfdError) -> Bool {
        while buffer.count - start < count {
            let arrived = ended ? 0 : try readMore()
            if arrived == 0 {
                ended = true
                if allowEnd && buffer.count == start { return false }
                throw .truncated(offset: offset)
            }
        }
        return true
    }

    private mutating func readMore() throws(SplitdirfdError) -> Int {
        if start > 0 {
            buffer.removeSubrange(..<start)
            start = 0
        }
        let old = buffer.count
        buffer.append(contentsOf: repeatElement(0, count: 64 * 1024))
        let fd = fd
        let path = path
        let result = buffer.withUnsafeMutableBytes { bytes in
            Result { () throws(SystemError) -> Int in try readSome(fd, into: UnsafeMutableRawBufferPointer(rebasing: bytes[old...]), path: path) }
        }
        let count: Int
        do { count = try result.get() } catch { throw .system(error) }
        buffer.removeSubrange((old + count)...)
        return count
    }

    private mutating func take(_ count: Int) -> [UInt8] {
        defer {
            start += count
            offset += UInt64(count)
        }
        return Array(buffer[start..<start + count])
    }

    private func littleEndian(_ bytes: some Collection<UInt8>) -> UInt64 {
        bytes.reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }
}
