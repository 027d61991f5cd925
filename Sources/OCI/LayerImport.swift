// Importing a tar layer into the repository as a split stream (composefs-rs's layout):
// header blocks, extended headers, padding and the content of files of at most 64 bytes stay
// inline; the content of every larger regular file becomes an object. `cfsctl cat` of the
// stream gives back the uncompressed tar byte for byte, so the stream's SHA-256 is the
// layer's diff_id.

import ComposeFS
import ComposeFSBase
import FsVerity
import Repository

#if canImport(Glibc)
import Glibc
#endif

/// What an import produced.
public struct LayerImportResult: Sendable {
    /// SHA-256 of the uncompressed tar ("sha256:…").
    public var diffID: Digest
    /// SHA-256 of the blob as received (equal to diffID for an uncompressed layer).
    public var blobDigest: Digest
    public var blobSize: UInt64
    /// The split stream, not yet stored.
    public var stream: [UInt8]
    public var statistics: ImportStatistics
}

/// Counts for `pull`'s summary line.
public struct ImportStatistics: Sendable {
    public var objectsWritten = 0
    public var objectsPresent = 0
    public var bytesWritten: UInt64 = 0
    public var bytesInline: UInt64 = 0

    public init() {}

    mutating func add(_ other: ImportStatistics) {
        objectsWritten += other.objectsWritten
        objectsPresent += other.objectsPresent
        bytesWritten += other.bytesWritten
        bytesInline += other.bytesInline
    }
}

/// The content type of layer split streams.
public let layerContentType = contentType("ocilayer")

/// An 8-character ASCII tag as the little-endian u64 split streams store.
func contentType(_ tag: String) -> UInt64 {
    var value: UInt64 = 0
    for (i, byte) in tag.utf8.prefix(8).enumerated() { value |= UInt64(byte) << (8 * UInt64(i)) }
    return value
}

package enum LayerImporter {
    /// Regular files larger than this become objects (composefs-rs's INLINE_CONTENT_MAX_V0).
    static let inlineMax: UInt64 = 64
    /// Files up to this size are hashed in memory before being written (most are skipped
    /// without a write when the object exists).
    static let bufferedObjectMax = 1 << 20
    /// Data on other entries (which real tars never have) is inline like composefs-rs, up to
    /// this much: a bomb of gigabytes on a directory header must not land in the in-memory stream.
    static let nonRegularInlineMax: UInt64 = 1 << 20

    /// Reads the blob from `source`, decompressing as its magic number says, and builds the
    /// split stream. `layer` names the layer in errors.
    package static func importLayer<Source: ByteSource>(
        from source: Source, into repository: Repository, layer: String
    ) throws(OCIError) -> LayerImportResult {
        let counted = DigestingSource(source)
        // Peek at the magic number without losing it.
        var peeking = PeekingSource(counted)
        let magic = try peeking.peek(4)
        // The tar's digest is the diff_id; the blob's (below any decompressor) its digest.
        func run<Tar: ByteSource>(
            _ decompressed: Tar, blob: (Tar) -> DigestingSource<Source>
        ) throws(OCIError) -> LayerImportResult {
            var tar = DigestingSource(decompressed)
            let (stream, statistics) = try split(&tar, repository: repository, layer: layer)
            let counted = blob(tar.inner)
            return LayerImportResult(
                diffID: tar.digest, blobDigest: counted.digest, blobSize: counted.count, stream: stream, statistics: statistics)
        }
        switch LayerCompression.detect(magic) {
        case .none: return try run(peeking) { $0.inner }
        case .gzip: return try run(try GzipSource(peeking, what: layer)) { $0.innerSource.inner }
        case .zstd: return try run(try ZstdSource(peeking, what: layer)) { $0.innerSource.inner }
        }
    }

    /// The tar → split stream pass. Reads to the very end, so everything after the end marker
    /// is kept (inline) and hashed too.
    static func split<Source: ByteSource>(
        _ tar: inout Source, repository: Repository, layer: String
    ) throws(OCIError) -> ([UInt8], ImportStatistics) {
        let splitter = Splitter(tar: tar, repository: repository)
        defer { splitter.buffer.deallocate() }
        // umoci 0.4.7 and older end a layer right after its last entry's data, with neither the
        // padding nor the end-of-archive blocks (umoci #436); Go's tar and bsdtar take them, and
        // so does the walk. What there is, is kept: the stream reproduces the blob as it came.
        var walker = TarWalker(splitter, layer: layer)
        while try walker.next() != nil {}
        // The rest (the second zero block, record padding, anything else) stays as is.
        try walker.input.copyInline(UInt64.max, "", upToEnd: true, decoder: walker.decoder)
        tar = walker.input.tar
        let stream = try repositoryCall { () throws(RepositoryError) in try walker.input.writer.finish() }
        return (stream, walker.input.statistics)
    }

    /// Reads the tar, writing headers, padding and small contents inline and larger contents
    /// as objects.
    private struct Splitter<Source: ByteSource>: TarInput {
        var tar: Source
        let repository: Repository
        var writer: SplitStreamWriter
        var statistics = ImportStatistics()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)

        init(tar: Source, repository: Repository) {
            self.tar = tar
            self.repository = repository
            writer = SplitStreamWriter(algorithm: repository.algorithm, contentType: layerContentType)
        }

        mutating func readRecord(into target: UnsafeMutableRawBufferPointer, decoder: TarHeaderDecoder) throws(OCIError) -> Int {
            let count = try tar.readFully(into: target)
            writer.writeInline(UnsafeRawBufferPointer(rebasing: target[..<count]))
            statistics.bytesInline += UInt64(count)
            return count
        }

        mutating func consumeData(of entry: TarEntry, padding: UInt64, decoder: TarHeaderDecoder) throws(OCIError) {
            if entry.dataSize > (entry.kind == .regular ? inlineMax : nonRegularInlineMax) {
                let id = try storeObject(size: entry.dataSize, decoder: decoder)
                writer.writeExternal(id, size: entry.dataSize)
            } else {
                try copyInline(entry.dataSize, "entry data", decoder: decoder)
            }
            // The archive may end in the padding (see `split`).
            try copyInline(padding, "padding", upToEnd: true, decoder: decoder)
        }

        /// Copies `count` bytes inline; with `upToEnd`, fewer where the archive ends first.
        mutating func copyInline(_ count: UInt64, _ what: String, upToEnd: Bool = false, decoder: TarHeaderDecoder) throws(OCIError) {
            var remaining = count
            while remaining > 0 {
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(remaining, UInt64(buffer.count)))])
                let read = try tar.readFully(into: piece)
                guard read == piece.count || upToEnd else { throw decoder.fail("archive is truncated (in \(what))") }
                writer.writeInline(UnsafeRawBufferPointer(rebasing: piece[..<read]))
                statistics.bytesInline += UInt64(read)
                if read < piece.count { return }
                remaining -= UInt64(read)
            }
        }

        /// Streams one file's content into an object.
        private mutating func storeObject(size: UInt64, decoder: TarHeaderDecoder) throws(OCIError) -> ObjectID {
            func truncated() -> OCIError { decoder.fail("archive is truncated (in file content)") }
            let stored: (id: ObjectID, existed: Bool)
            if size <= UInt64(bufferedObjectMax) {
                var content = [UInt8](repeating: 0, count: Int(size))
                let read = try withMutableBytes(&content) { (target) throws(OCIError) in try self.tar.readFully(into: target) }
                guard read == Int(size) else { throw truncated() }
                stored = try repositoryCall { () throws(RepositoryError) in try repository.storeObject(content) }
            } else {
                let object = try repositoryCall { () throws(RepositoryError) in try ObjectWriter(repository: repository) }
                var remaining = size
                while remaining > 0 {
                    let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(remaining, UInt64(buffer.count)))])
                    guard try tar.readFully(into: piece) == piece.count else { throw truncated() }
                    try repositoryCall { () throws(RepositoryError) in try object.write(UnsafeRawBufferPointer(piece)) }
                    remaining -= UInt64(piece.count)
                }
                stored = try repositoryCall { () throws(RepositoryError) in try object.finish() }
            }
            if stored.existed {
                statistics.objectsPresent += 1
            } else {
                statistics.objectsWritten += 1
                statistics.bytesWritten += size
            }
            return stored.id
        }
    }
}

/// Lets the first bytes be looked at before they are read.
struct PeekingSource<Inner: ByteSource>: ByteSource {
    var inner: Inner
    private var peeked: [UInt8] = []

    init(_ inner: Inner) { self.inner = inner }

    mutating func peek(_ count: Int) throws(OCIError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try withMutableBytes(&bytes) { (buffer) throws(OCIError) in try inner.readFully(into: buffer) }
        peeked = Array(bytes[0..<n])
        return peeked
    }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        if !peeked.isEmpty {
            let n = min(buffer.count, peeked.count)
            peeked.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            peeked.removeFirst(n)
            return n
        }
        return try inner.read(into: buffer)
    }
}
