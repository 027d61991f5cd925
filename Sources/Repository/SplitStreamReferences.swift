// The reference arrays of a split stream (composefs-rs doc/splitstream.md): what gc and fsck
// need to know which objects and streams a stream keeps alive. The arrays are stored
// uncompressed, so this reads no zstd.
//
// Layout (little-endian): header {magic "SplitStream"[11], version u8, flags u16, algorithm u8,
// lg_blocksize u8, info range {start u64, end u64}} (32 bytes); info {stream_refs range,
// object_refs range, stream range, named_refs range, content_type u64, stream_size u64}.
// Older writers put the info range first: {info range, flags u16, magic[11], version,
// algorithm, lg_blocksize}.

import FsVerity

public struct SplitStreamReferences: Sendable {
    /// Digests of other split streams this one names.
    public var streams: [[UInt8]]
    /// Digests of the objects whose content makes up the stream.
    public var objects: [[UInt8]]
    /// Where the info section starts.
    let infoStart: Int

    static let magic = Array("SplitStream".utf8)

    init(_ bytes: [UInt8], algorithm: FsVerityAlgorithm) throws(RepositoryError) {
        func fail(_ reason: String) -> RepositoryError { .corrupt(path: "split stream", reason: reason) }
        func u64(_ offset: Int) throws(RepositoryError) -> Int {
            guard let result = Int(exactly: try littleEndian64(bytes, offset)) else { throw fail("offset out of range") }
            return result
        }
        guard bytes.count >= 32 else { throw fail("truncated header") }
        let rangeOffset: Int
        let fields: (version: UInt8, algorithm: UInt8, logBlockSize: UInt8)
        if Array(bytes[0..<11]) == Self.magic {
            fields = (bytes[11], bytes[14], bytes[15])
            rangeOffset = 16
        } else if Array(bytes[18..<29]) == Self.magic {
            fields = (bytes[29], bytes[30], bytes[31])
            rangeOffset = 0
        } else {
            throw fail("Invalid splitstream header magic value")
        }
        guard fields.version == 0 else { throw fail("Invalid splitstream version \(fields.version)") }
        guard fields.algorithm == algorithm.rawValue else { throw fail("Invalid splitstream fs-verity algorithm type") }
        guard fields.logBlockSize == 12 else { throw fail("Invalid splitstream fs-verity block size") }
        let info = try u64(rangeOffset)
        let infoEnd = try u64(rangeOffset + 8)
        guard infoEnd >= info, infoEnd - info >= 80, infoEnd <= bytes.count else { throw fail("bad info range") }
        infoStart = info
        func digests(_ rangeOffset: Int) throws(RepositoryError) -> [[UInt8]] {
            let start = try u64(rangeOffset)
            let end = try u64(rangeOffset + 8)
            guard end >= start, end <= bytes.count else { throw fail("bad reference range") }
            guard (end - start) % algorithm.digestSize == 0 else { throw fail("reference array is not whole digests") }
            return stride(from: start, to: end, by: algorithm.digestSize).map { Array(bytes[$0..<($0 + algorithm.digestSize)]) }
        }
        streams = try digests(info)
        objects = try digests(info + 16)
    }
}
