// Reading a stored layer back: the tar entries of a layer split stream, each with where its
// content is (inline bytes, or an object). Only headers are parsed; contents stay in objects.

import ComposeFSBase
import FsVerity
import Repository

/// Where a regular file's data is.
public enum EntryContent: Sendable {
    case none
    case inline([UInt8])
    /// The whole data region is this object.
    case object(ObjectID)
}

public struct LayerEntry: Sendable {
    public var entry: TarEntry
    public var content: EntryContent
}

package enum LayerReader {
    /// Every entry of a layer stream, in archive order.
    package static func entries(of stream: SplitStream, layer: String) throws(OCIError) -> [LayerEntry] {
        var pieces: [SplitStream.Chunk] = []
        try repositoryCall { () throws(RepositoryError) in
            try stream.forEachChunk { (chunk) throws(RepositoryError) in pieces.append(chunk) }
        }
        var walker = TarWalker(StreamChunks(pieces: pieces), layer: layer)
        var result: [LayerEntry] = []
        while let (entry, content) = try walker.next() {
            result.append(LayerEntry(entry: entry, content: content))
        }
        return result
    }
}

/// A split stream's chunks read in order: headers from the inline data, each entry's data
/// either inline too or one whole object.
private struct StreamChunks: TarInput {
    let pieces: [SplitStream.Chunk]
    var index = 0
    var offset = 0

    mutating func readRecord(into buffer: UnsafeMutableRawBufferPointer, decoder: TarHeaderDecoder) throws(OCIError) -> Int {
        var done = 0
        return try take(buffer.count, decoder: decoder) { piece in
            UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + piece.count)]).copyMemory(from: piece)
            done += piece.count
        }
    }

    mutating func consumeData(of entry: TarEntry, padding: UInt64, decoder: TarHeaderDecoder) throws(OCIError) -> EntryContent {
        guard entry.dataSize > 0 else { return .none }
        if let id = takeObject() {
            skipPadding(padding, decoder: decoder)
            return .object(id)
        }
        guard entry.dataSize <= UInt64(Int.max / 2) else { throw decoder.fail("archive is truncated (in entry data)") }
        // Appended as it comes: a damaged header's size allocates nothing the stream does not hold.
        var data: [UInt8] = []
        let read = try take(Int(entry.dataSize), decoder: decoder) { data.append(contentsOf: $0) }
        guard read == Int(entry.dataSize) else { throw decoder.fail("archive is truncated (in entry data)") }
        skipPadding(padding, decoder: decoder)
        return .inline(data)
    }

    /// Hands the next `count` inline bytes to `body` piece by piece; returns how many there
    /// were (fewer only at the end of the stream).
    private mutating func take(
        _ count: Int, decoder: TarHeaderDecoder, _ body: (UnsafeRawBufferPointer) -> Void
    ) throws(OCIError) -> Int {
        var done = 0
        while done < count {
            skipEmpty()
            guard index < pieces.count else { break }
            guard case let .inline(bytes) = pieces[index] else { throw decoder.fail("object where inline data was expected") }
            let start = bytes.startIndex + offset
            let length = min(count - done, bytes.endIndex - start)
            bytes[start..<(start + length)].withUnsafeBytes { body($0) }
            offset += length
            done += length
        }
        return done
    }

    /// The next object, if the inline data is used up and an object comes next.
    private mutating func takeObject() -> ObjectID? {
        skipEmpty()
        guard index < pieces.count, case let .external(id) = pieces[index] else { return nil }
        index += 1
        offset = 0
        return id
    }

    /// Skips the padding after an entry's data; a layer may end in it (see `LayerImporter.split`).
    private mutating func skipPadding(_ count: UInt64, decoder: TarHeaderDecoder) {
        _ = try? take(Int(count), decoder: decoder) { _ in }
    }

    private mutating func skipEmpty() {
        while index < pieces.count, case let .inline(bytes) = pieces[index], offset >= bytes.count {
            index += 1
            offset = 0
        }
    }
}
