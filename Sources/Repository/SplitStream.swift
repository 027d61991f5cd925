// Split streams (composefs-rs doc/splitstream.md): a file stored as small inline pieces plus
// references to objects, so a tar layer can be reproduced byte for byte while its files'
// contents live once in objects/.
//
// Layout, little-endian:
//   header (32 bytes): magic "SplitStream", version u8 = 0, flags u16 = 0, algorithm u8,
//                      lg_blocksize u8 = 12, info range {start u64, end u64}
//   info (80 bytes):   stream_refs range, object_refs range, stream range (zstd),
//                      named_refs range (zstd), content_type u64, stream_size u64
//   stream_refs:       digests of split streams this one names (uncompressed)
//   object_refs:       digests of the objects the stream uses, in first-use order (uncompressed)
//   named_refs:        zstd of "INDEX:NAME\0" records sorted by name (INDEX into stream_refs)
//   stream:            zstd of chunks: i64 n < 0 → -n inline bytes follow; n ≥ 0 → object_refs[n]
// The writer uses libzstd's defaults (level 3) the way composefs-rs does, so the same content
// gives the same stream object.

import CZstd
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

public struct SplitStreamWriter {
    public let algorithm: FsVerityAlgorithm
    public let contentType: UInt64
    private var chunks: [UInt8] = []
    private var pendingInline: [UInt8] = []
    private var objectRefs: [[UInt8]] = []
    private var objectIndex: [[UInt8]: Int] = [:]
    private var streamRefs: [[UInt8]] = []
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
    public mutating func writeExternal(_ id: [UInt8], size objectSize: UInt64) {
        flushInline()
        let index = objectIndex[id] ?? {
            objectRefs.append(id)
            objectIndex[id] = objectRefs.count - 1
            return objectRefs.count - 1
        }()
        appendInt64(Int64(index))
        size += objectSize
    }

    /// Names another split stream (by its object id) under `name`.
    public mutating func addNamedStreamRef(_ name: String, _ id: [UInt8]) {
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
        let streamCompressed = try zstdCompress(chunks)
        var out: [UInt8] = []
        func u64(_ value: UInt64) { for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: value >> (8 * i))) } }
        let infoStart: UInt64 = 32
        let streamRefsStart = infoStart + 80
        let objectRefsStart = streamRefsStart + UInt64(streamRefs.count * algorithm.digestSize)
        let namedStart = objectRefsStart + UInt64(objectRefs.count * algorithm.digestSize)
        let streamStart = namedStart + UInt64(namedCompressed.count)
        out += SplitStreamReferences.magic + [0, 0, 0, algorithm.rawValue, 12]
        u64(infoStart)
        u64(streamRefsStart)
        u64(streamRefsStart); u64(objectRefsStart)
        u64(objectRefsStart); u64(namedStart)
        u64(streamStart); u64(streamStart + UInt64(streamCompressed.count))
        u64(namedStart); u64(streamStart)
        u64(contentType)
        u64(size)
        for id in streamRefs { out += id }
        for id in objectRefs { out += id }
        out += namedCompressed
        out += streamCompressed
        return out
    }

    private mutating func flushInline() {
        guard !pendingInline.isEmpty else { return }
        appendInt64(-Int64(pendingInline.count))
        chunks += pendingInline
        pendingInline.removeAll(keepingCapacity: true)
    }

    private mutating func appendInt64(_ value: Int64) {
        for i in 0..<8 { chunks.append(UInt8(truncatingIfNeeded: UInt64(bitPattern: value) >> (8 * i))) }
    }
}

/// A split stream read back: its references and its reassembly.
public struct SplitStream {
    public let references: SplitStreamReferences
    public let contentType: UInt64
    public let size: UInt64
    /// name → stream_refs digest.
    public let namedRefs: [String: [UInt8]]
    private let chunks: [UInt8]

    public init(_ bytes: [UInt8], algorithm: FsVerityAlgorithm) throws(RepositoryError) {
        references = try SplitStreamReferences(bytes, algorithm: algorithm)
        let info = references.infoStart
        func range(_ at: Int) throws(RepositoryError) -> Range<Int> {
            guard let start = Int(exactly: try littleEndian64(bytes, info + at)),
                let end = Int(exactly: try littleEndian64(bytes, info + at + 8)),
                start <= end, end <= bytes.count
            else { throw .corrupt(path: "split stream", reason: "bad section range") }
            return start..<end
        }
        chunks = try zstdDecompress(Array(bytes[try range(32)]))
        let named = try zstdDecompress(Array(bytes[try range(48)]))
        contentType = try littleEndian64(bytes, info + 64)
        size = try littleEndian64(bytes, info + 72)
        var refs: [String: [UInt8]] = [:]
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
        case external([UInt8])
    }

    /// The pieces in order.
    public func forEachChunk(_ body: (Chunk) throws(RepositoryError) -> Void) throws(RepositoryError) {
        var offset = 0
        while offset < chunks.count {
            guard offset + 8 <= chunks.count else { throw .corrupt(path: "split stream", reason: "truncated chunk header") }
            let n = Int64(bitPattern: try littleEndian64(chunks, offset))
            offset += 8
            if n < 0 {
                guard let length = Int(exactly: n.magnitude), length <= chunks.count - offset else {
                    throw .corrupt(path: "split stream", reason: "truncated inline chunk")
                }
                try body(.inline(chunks[offset..<(offset + length)]))
                offset += length
            } else {
                guard n < references.objects.count else { throw .corrupt(path: "split stream", reason: "object index out of range") }
                try body(.external(references.objects[Int(n)]))
            }
        }
    }

    /// Writes the original bytes: inline chunks as stored, external ones from their objects.
    public func reassemble(
        openObject: ([UInt8]) throws(RepositoryError) -> Int32, output: (UnsafeRawBufferPointer) throws(RepositoryError) -> Void
    ) throws(RepositoryError) {
        try forEachChunk { (chunk) throws(RepositoryError) in
            switch chunk {
            case let .inline(bytes):
                try withBytes(bytes, output)
            case let .external(id):
                let fd = try openObject(id)
                defer { close(fd) }
                var buffer = [UInt8](repeating: 0, count: 1 << 16)
                while true {
                    let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                    if count < 0 && errno == EINTR { continue }
                    guard count >= 0 else { throw .system(operation: "read", path: "object", code: errno) }
                    if count == 0 { break }
                    try withBytes(buffer[..<count], output)
                }
            }
        }
    }
}

func littleEndian64(_ bytes: [UInt8], _ offset: Int) throws(RepositoryError) -> UInt64 {
    guard offset >= 0, offset + 8 <= bytes.count else { throw .corrupt(path: "split stream", reason: "truncated") }
    var value: UInt64 = 0
    for i in (0..<8).reversed() { value = value << 8 | UInt64(bytes[offset + i]) }
    return value
}

/// One zstd frame, made as composefs-rs makes it: data pushed with ZSTD_e_continue, then one
/// ZSTD_e_end on empty input (which for empty data gives the 9-byte frame with size 0).
func zstdCompress(_ input: [UInt8]) throws(RepositoryError) -> [UInt8] {
    guard let context = ZSTD_createCCtx() else { throw .system(operation: "zstd", path: "compress", code: ENOMEM) }
    defer { ZSTD_freeCCtx(context) }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: ZSTD_CStreamOutSize())
    func run(_ data: UnsafeRawBufferPointer, _ mode: ZSTD_EndDirective) throws(RepositoryError) {
        var inBuffer = ZSTD_inBuffer(src: data.baseAddress, size: data.count, pos: 0)
        while true {
            let (remaining, produced) = chunk.withUnsafeMutableBytes { out in
                var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                let remaining = ZSTD_compressStream2(context, &outBuffer, &inBuffer, mode)
                return (remaining, outBuffer.pos)
            }
            guard ZSTD_isError(remaining) == 0 else {
                throw .corrupt(path: "zstd", reason: String(cString: ZSTD_getErrorName(remaining)))
            }
            output += chunk[..<produced]
            let done = mode == ZSTD_e_end ? remaining == 0 : inBuffer.pos == inBuffer.size
            if done { return }
        }
    }
    if !input.isEmpty {
        try withBytes(input[...]) { data throws(RepositoryError) in try run(data, ZSTD_e_continue) }
    }
    try run(UnsafeRawBufferPointer(start: nil, count: 0), ZSTD_e_end)
    return output
}

/// Every frame of `input`, decompressed; bounded so a hostile stream cannot exhaust memory.
func zstdDecompress(_ input: [UInt8], limit: Int = 1 << 32) throws(RepositoryError) -> [UInt8] {
    guard !input.isEmpty else { return [] }
    guard let context = ZSTD_createDCtx() else { throw .system(operation: "zstd", path: "decompress", code: ENOMEM) }
    defer { ZSTD_freeDCtx(context) }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: ZSTD_DStreamOutSize())
    try withBytes(input[...]) { data throws(RepositoryError) in
        var inBuffer = ZSTD_inBuffer(src: data.baseAddress, size: data.count, pos: 0)
        var lastResult = 0
        while inBuffer.pos < inBuffer.size || lastResult != 0 {
            let before = inBuffer.pos
            let (result, produced) = chunk.withUnsafeMutableBytes { out in
                var outBuffer = ZSTD_outBuffer(dst: out.baseAddress, size: out.count, pos: 0)
                let result = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
                return (result, outBuffer.pos)
            }
            guard ZSTD_isError(result) == 0 else {
                throw .corrupt(path: "split stream", reason: "zstd: " + String(cString: ZSTD_getErrorName(result)))
            }
            output += chunk[..<produced]
            guard output.count <= limit else { throw .corrupt(path: "split stream", reason: "decompresses to too much data") }
            if produced == 0 && inBuffer.pos == before {
                throw .corrupt(path: "split stream", reason: "truncated zstd frame")
            }
            lastResult = result
        }
    }
    return output
}

/// `withUnsafeBytes` for a body that throws `RepositoryError` (the standard one rethrows untyped).
func withBytes<R>(
    _ bytes: ArraySlice<UInt8>, _ body: (UnsafeRawBufferPointer) throws(RepositoryError) -> R
) throws(RepositoryError) -> R {
    let result = bytes.withUnsafeBytes { buffer in
        Result { () throws(RepositoryError) -> R in try body(buffer) }
    }
    return try result.get()
}
