// Split streams (composefs-rs doc/splitstream.md): a file stored as small inline pieces plus
// references to objects, so a tar layer can be reproduced byte for byte while its files'
// contents live once in objects/.
//
// Layout, little-endian:
//   header (32 bytes): magic "SplitStream", version u8 = 0, flags u16 = 0, algorithm u8,
//                      lg_blocksize u8 = 12, info range {start u64, end u64}
//                      (older writers put the info range first: {info range, flags u16,
//                      magic[11], version u8, algorithm u8, lg_blocksize u8})
//   info (80 bytes):   stream_refs range, object_refs range, stream range (zstd),
//                      named_refs range (zstd), content_type u64, stream_size u64
//   stream_refs:       digests of split streams this one names (uncompressed)
//   object_refs:       digests of the objects the stream uses, in first-use order (uncompressed)
//   named_refs:        zstd of "INDEX:NAME\0" records sorted by name (INDEX into stream_refs)
//   stream:            zstd of chunks: i64 n < 0 → -n inline bytes follow; n ≥ 0 → object_refs[n]
// The writer uses libzstd's defaults (level 3) the way composefs-rs does, so the same content
// gives the same stream object.

import ComposeFSBase
import FsVerity

/// The header and info section: where every other section is.
struct SplitStreamLayout {
    static let magic = Array("SplitStream".utf8)
    static let headerSize = 32
    static let infoSize = 80
    static let logBlockSize: UInt8 = 12

    var algorithm: FsVerityAlgorithm
    var streamRefs: Range<Int>
    var objectRefs: Range<Int>
    var stream: Range<Int>
    var namedRefs: Range<Int>
    var contentType: UInt64
    /// Bytes of the reassembled stream.
    var size: UInt64

    init(
        algorithm: FsVerityAlgorithm, streamRefs: Range<Int>, objectRefs: Range<Int>, stream: Range<Int>, namedRefs: Range<Int>,
        contentType: UInt64, size: UInt64
    ) {
        self.algorithm = algorithm
        self.streamRefs = streamRefs
        self.objectRefs = objectRefs
        self.stream = stream
        self.namedRefs = namedRefs
        self.contentType = contentType
        self.size = size
    }

    /// The header (with the info section right after it) and the info section.
    func encode(into out: inout ByteWriter) {
        out.bytes(Self.magic)
        out.u8(0)  // version
        out.u16(0)  // flags
        out.u8(algorithm.rawValue)
        out.u8(Self.logBlockSize)
        out.u64(UInt64(Self.headerSize))
        out.u64(UInt64(Self.headerSize + Self.infoSize))
        for range in [streamRefs, objectRefs, stream, namedRefs] {
            out.u64(UInt64(range.lowerBound))
            out.u64(UInt64(range.upperBound))
        }
        out.u64(contentType)
        out.u64(size)
    }

    /// Decodes and checks the header and info of a stream.
    init(decoding r: ByteReader, algorithm: FsVerityAlgorithm) throws(RepositoryError) {
        func fail(_ reason: String) -> RepositoryError { .corrupt(path: "split stream", reason: reason) }
        guard r.count >= Self.headerSize else { throw fail("truncated header") }
        // Where the info range and the version byte are, in the current layout or the older one.
        let (rangeOffset, versionOffset): (Int, Int)
        if (try? r.bytes(at: 0, count: Self.magic.count)) == Self.magic {
            (rangeOffset, versionOffset) = (16, 11)
        } else if (try? r.bytes(at: 18, count: Self.magic.count)) == Self.magic {
            (rangeOffset, versionOffset) = (0, 29)
        } else {
            throw fail("Invalid splitstream header magic value")
        }
        // The header is whole: these reads are inside it.
        let version = r.base[versionOffset]
        let algorithmOffset = versionOffset + (rangeOffset == 16 ? 3 : 1)
        guard version == 0 else { throw fail("Invalid splitstream version \(version)") }
        guard r.base[algorithmOffset] == algorithm.rawValue else { throw fail("Invalid splitstream fs-verity algorithm type") }
        guard r.base[algorithmOffset + 1] == Self.logBlockSize else { throw fail("Invalid splitstream fs-verity block size") }
        func range(_ at: Int) throws(RepositoryError) -> Range<Int> {
            guard let start = try? r.u64(at: at), let end = try? r.u64(at: at + 8),
                let lower = Int(exactly: start), let upper = Int(exactly: end), lower <= upper, upper <= r.count
            else { throw fail("bad section range") }
            return lower..<upper
        }
        func number(_ at: Int) throws(RepositoryError) -> UInt64 {
            guard let value = try? r.u64(at: at) else { throw fail("truncated") }
            return value
        }
        let info = try range(rangeOffset)
        guard info.count >= Self.infoSize else { throw fail("bad info range") }
        self.algorithm = algorithm
        streamRefs = try range(info.lowerBound)
        objectRefs = try range(info.lowerBound + 16)
        stream = try range(info.lowerBound + 32)
        namedRefs = try range(info.lowerBound + 48)
        contentType = try number(info.lowerBound + 64)
        size = try number(info.lowerBound + 72)
        for refs in [streamRefs, objectRefs] where refs.count % algorithm.digestSize != 0 {
            throw fail("reference array is not whole digests")
        }
    }
}

/// The reference arrays of a split stream: what gc and fsck need to know which objects and
/// streams it keeps alive. They are stored uncompressed, so this reads no zstd.
public struct SplitStreamReferences: Sendable {
    /// Other split streams this one names.
    public var streams: [ObjectID]
    /// The objects whose content makes up the stream.
    public var objects: [ObjectID]

    init(_ bytes: [UInt8], algorithm: FsVerityAlgorithm) throws(RepositoryError) {
        let layout = try withBytes(bytes) { (buffer) throws(RepositoryError) in try SplitStreamLayout(decoding: ByteReader(buffer), algorithm: algorithm) }
        func ids(_ range: Range<Int>) -> [ObjectID] {
            stride(from: range.lowerBound, to: range.upperBound, by: algorithm.digestSize).compactMap {
                ObjectID(algorithm: algorithm, bytes: bytes[$0..<$0 + algorithm.digestSize])
            }
        }
        streams = ids(layout.streamRefs)
        objects = ids(layout.objectRefs)
    }
}

public struct SplitStreamWriter {
    public let algorithm: FsVerityAlgorithm
    public let contentType: UInt64
    private var chunks = ByteWriter()
    private var pendingInline: [UInt8] = []
    private var objectRefs: [ObjectID] = []
    private var objectIndex: [ObjectID: Int] = [:]
    private var streamRefs: [ObjectID] = []
    private var namedRefs: [String: Int] = [:]
    private var size: UInt64 = 0

    public init(algorithm: FsVerityAlgorithm, contentType: UInt64) {
        self.algorithm = algorithm
        self.contentType = contentType
    }

    public mutating func writeInline(_ bytes: some Collection<UInt8>) {
        pendingInline.append(contentsOf: bytes)
        size += UInt64(bytes.count)
    }

    /// A reference to an object of `size` bytes already in the repository.
    public mutating func writeExternal(_ id: ObjectID, size objectSize: UInt64) {
        flushInline()
        let index = objectIndex[id] ?? {
            objectRefs.append(id)
            objectIndex[id] = objectRefs.count - 1
            return objectRefs.count - 1
        }()
        chunks.u64(UInt64(index))
        size += objectSize
    }

    /// Names another split stream (by its object id) under `name`.
    public mutating func addNamedStreamRef(_ name: String, _ id: ObjectID) {
        let index = streamRefs.firstIndex(of: id) ?? {
            streamRefs.append(id)
            return streamRefs.count - 1
        }()
        namedRefs[name] = index
    }

    /// The finished file.
    public mutating func finish() throws(RepositoryError) -> [UInt8] {
        flushInline()
        var named: [UInt8] = []
        for name in namedRefs.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            named += Array("\(namedRefs[name] ?? 0):\(name)".utf8) + [0]
        }
        let namedCompressed = try zstdCompress(named)
        let streamCompressed = try zstdCompress(chunks.bytes)
        let streamRefsStart = SplitStreamLayout.headerSize + SplitStreamLayout.infoSize
        let objectRefsStart = streamRefsStart + streamRefs.count * algorithm.digestSize
        let namedStart = objectRefsStart + objectRefs.count * algorithm.digestSize
        let streamStart = namedStart + namedCompressed.count
        let layout = SplitStreamLayout(
            algorithm: algorithm, streamRefs: streamRefsStart..<objectRefsStart, objectRefs: objectRefsStart..<namedStart,
            stream: streamStart..<streamStart + streamCompressed.count, namedRefs: namedStart..<streamStart,
            contentType: contentType, size: size)
        var out = ByteWriter(capacity: streamStart + streamCompressed.count)
        layout.encode(into: &out)
        for id in streamRefs + objectRefs { out.bytes(id.bytes) }
        out.bytes(namedCompressed)
        out.bytes(streamCompressed)
        return out.bytes
    }

    private mutating func flushInline() {
        guard !pendingInline.isEmpty else { return }
        chunks.u64(UInt64(bitPattern: -Int64(pendingInline.count)))
        chunks.bytes(pendingInline)
        pendingInline.removeAll(keepingCapacity: true)
    }
}

/// A split stream read back: its references and its reassembly.
public struct SplitStream {
    public let references: SplitStreamReferences
    public let contentType: UInt64
    public let size: UInt64
    /// name → stream_refs digest.
    public let namedRefs: [String: ObjectID]
    private let chunks: [UInt8]

    public init(_ bytes: [UInt8], algorithm: FsVerityAlgorithm) throws(RepositoryError) {
        let layout = try withBytes(bytes) { (buffer) throws(RepositoryError) in try SplitStreamLayout(decoding: ByteReader(buffer), algorithm: algorithm) }
        references = try SplitStreamReferences(bytes, algorithm: algorithm)
        chunks = try zstdDecompress(Array(bytes[layout.stream]))
        contentType = layout.contentType
        size = layout.size
        let named = try zstdDecompress(Array(bytes[layout.namedRefs]))
        var refs: [String: ObjectID] = [:]
        var rest = named[...]
        while !rest.isEmpty {
            guard let end = rest.firstIndex(of: 0) else {
                throw .corrupt(path: "split stream", reason: "Trailing junk in named references section")
            }
            let record = rest[rest.startIndex..<end]
            rest = rest[(end + 1)...]
            guard let colon = record.firstIndex(of: UInt8(ascii: ":")),
                let index = Int(String(decoding: record[record.startIndex..<colon], as: UTF8.self)),
                references.streams.indices.contains(index)
            else { throw .corrupt(path: "split stream", reason: "bad named reference") }
            refs[String(decoding: record[(colon + 1)...], as: UTF8.self)] = references.streams[index]
        }
        namedRefs = refs
    }

    /// One piece of the stream: literal bytes, or the whole content of an object.
    public enum Chunk {
        case inline(ArraySlice<UInt8>)
        case external(ObjectID)
    }

    /// The pieces in order.
    public func forEachChunk(_ body: (Chunk) throws(RepositoryError) -> Void) throws(RepositoryError) {
        func fail(_ reason: String) -> RepositoryError { .corrupt(path: "split stream", reason: reason) }
        try withBytes(chunks) { (buffer) throws(RepositoryError) in
            let reader = ByteReader(buffer)
            var offset = 0
            while offset < chunks.count {
                guard let header = try? reader.u64(at: offset) else { throw fail("truncated chunk header") }
                let n = Int64(bitPattern: header)
                offset += 8
                if n < 0 {
                    guard let length = Int(exactly: n.magnitude), length <= chunks.count - offset else {
                        throw fail("truncated inline chunk")
                    }
                    try body(.inline(chunks[offset..<(offset + length)]))
                    offset += length
                } else {
                    guard n < references.objects.count else { throw fail("object index out of range") }
                    try body(.external(references.objects[Int(n)]))
                }
            }
        }
    }

    /// Writes the original bytes: inline chunks as stored, external ones from their objects.
    public func reassemble(
        openObject: (ObjectID) throws(RepositoryError) -> FileDescriptor,
        output: (UnsafeRawBufferPointer) throws(RepositoryError) -> Void
    ) throws(RepositoryError) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        try forEachChunk { (chunk) throws(RepositoryError) in
            switch chunk {
            case let .inline(bytes):
                try withBytes(bytes, output)
            case let .external(id):
                let file = try openObject(id)
                var offset: UInt64 = 0
                while true {
                    let count = try systemCall { () throws(SystemError) in try preadAll(file.raw, into: buffer, at: offset, path: file.path) }
                    if count == 0 { break }
                    try output(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
                    offset += UInt64(count)
                }
            }
        }
    }
}
