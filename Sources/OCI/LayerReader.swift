// Reading a stored layer back: the tar entries of a layer split stream, each with where its
// content is (inline bytes, or an object). Only headers are parsed; contents stay in objects.

import ComposeFS
import Repository

/// Where a regular file's data is.
public enum EntryContent: Sendable {
    case none
    case inline([UInt8])
    /// The whole data region is this object.
    case object([UInt8])
}

public struct LayerEntry: Sendable {
    public var entry: TarEntry
    public var content: EntryContent
}

enum LayerReader {
    /// Every entry of a layer stream, in archive order.
    static func entries(of stream: SplitStream, layer: String) throws(OCIError) -> [LayerEntry] {
        var decoder = TarHeaderDecoder(layer: layer)
        // The inline bytes not yet parsed, and whether an object follows them.
        var pieces: [SplitStream.Chunk] = []
        do {
            try stream.forEachChunk { (chunk) throws(RepositoryError) in pieces.append(chunk) }
        } catch { throw .repository(error) }

        var cursor = ChunkCursor(pieces: pieces, layer: layer)
        var result: [LayerEntry] = []
        while let block = try cursor.inlineBytes(512, decoder: decoder) {
            let action = try withRawBytes(block) { (raw) throws(OCIError) in try decoder.header(raw) }
            var entry: TarEntry
            switch action {
            case .endOfArchive:
                return result
            case let .extended(size):
                guard let data = try cursor.inlineBytes(Int(size + padding(size)), decoder: decoder) else {
                    throw decoder.fail("stream ends inside an extended header")
                }
                try decoder.extendedData(Array(data[0..<Int(size)]))
                continue
            case .sparseExtension:
                var finished: TarEntry?
                while finished == nil {
                    guard let extension_ = try cursor.inlineBytes(512, decoder: decoder) else {
                        throw decoder.fail("stream ends inside a sparse header")
                    }
                    finished = try withRawBytes(extension_) { (raw) throws(OCIError) in try decoder.sparseExtension(raw) }
                }
                entry = finished!
            case let .entry(decoded):
                entry = decoded
            }
            var content = EntryContent.none
            if entry.dataSize > 0 {
                if let id = cursor.takeObject() {
                    content = .object(id)
                    guard try cursor.inlineBytes(Int(padding(entry.dataSize)), decoder: decoder) != nil else {
                        throw decoder.fail("stream ends inside padding")
                    }
                } else {
                    guard entry.dataSize <= UInt64(Int.max / 2),
                        let data = try cursor.inlineBytes(Int(entry.dataSize + padding(entry.dataSize)), decoder: decoder)
                    else { throw decoder.fail("stream ends inside entry data") }
                    content = .inline(Array(data[0..<Int(entry.dataSize)]))
                }
            }
            result.append(LayerEntry(entry: entry, content: content))
        }
        // Layers imported here always have an end marker; tolerate its absence anyway.
        return result
    }

    static func padding(_ size: UInt64) -> UInt64 { (512 - size % 512) % 512 }
}

/// Sequential reading across inline chunks; objects are taken whole.
private struct ChunkCursor {
    let pieces: [SplitStream.Chunk]
    let layer: String
    var index = 0
    var offset = 0

    init(pieces: [SplitStream.Chunk], layer: String) {
        self.pieces = pieces
        self.layer = layer
    }

    /// The next object, if the inline data is used up and an object comes next.
    mutating func takeObject() -> [UInt8]? {
        skipEmpty()
        guard index < pieces.count, case let .external(id) = pieces[index] else { return nil }
        index += 1
        offset = 0
        return id
    }

    /// The next `count` inline bytes; nil at the end of the stream.
    mutating func inlineBytes(_ count: Int, decoder: TarHeaderDecoder) throws(OCIError) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            skipEmpty()
            guard index < pieces.count else {
                if out.isEmpty { return nil }
                throw decoder.fail("stream ends in the middle of a record")
            }
            guard case let .inline(bytes) = pieces[index] else {
                throw decoder.fail("object where inline data was expected")
            }
            let start = bytes.startIndex + offset
            let take = min(count - out.count, bytes.endIndex - start)
            out += bytes[start..<(start + take)]
            offset += take
        }
        return out
    }

    private mutating func skipEmpty() {
        while index < pieces.count, case let .inline(bytes) = pieces[index], offset >= bytes.count {
            index += 1
            offset = 0
        }
    }
}
