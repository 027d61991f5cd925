// Sequential byte sources for layer import: a file (or a range of one), a SHA-256 of what
// passes through, and gzip / zstd decompression. Each holds only a fixed-size buffer, so a
// layer is never in memory whole.

import CZlib
import CZstd
import ComposeFSBase
import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// Something that yields bytes in order.
package protocol ByteSource {
    /// Reads up to `buffer.count` bytes; 0 only at the end.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int
}

/// `length` bytes of an open file from `offset` (pread: several readers may share the fd).
struct FileRangeSource: ByteSource {
    let fd: Int32
    let path: String
    private var offset: UInt64
    private var remaining: UInt64

    init(fd: Int32, path: String, offset: UInt64 = 0, length: UInt64) {
        self.fd = fd
        self.path = path
        self.offset = offset
        self.remaining = length
    }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        let wanted = Int(min(UInt64(buffer.count), remaining))
        guard wanted > 0 else { return 0 }
        let count = try systemCall { () throws(SystemError) in
            try preadSome(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<wanted]), at: offset, path: path)
        }
        guard count > 0 else { throw .transfer(what: path, reason: "file is shorter than expected (truncated)") }
        offset += UInt64(count)
        remaining -= UInt64(count)
        return count
    }
}

/// Passes bytes through, computing their SHA-256 and counting them.
struct DigestingSource<Inner: ByteSource>: ByteSource {
    var inner: Inner
    private(set) var hasher = SHA256()
    private(set) var count: UInt64 = 0

    init(_ inner: Inner) { self.inner = inner }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        let n = try inner.read(into: buffer)
        if n > 0 {
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            count += UInt64(n)
        }
        return n
    }

    /// The SHA-256 of everything read so far.
    var digest: Digest { Digest(uncheckedAlgorithm: "sha256", hex: Hex.encode(hasher.finalize())) }
}

/// The compression of a layer blob.
public enum LayerCompression: Sendable {
    case none, gzip, zstd

    /// Recognized by the magic number at the start of the blob (media types are not trusted).
    static func detect(_ prefix: [UInt8]) -> LayerCompression {
        if prefix.starts(with: [0x1F, 0x8B]) { return .gzip }
        if prefix.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        return .none
    }
}

/// Buffers input for the decompressors.
private struct InputBuffer<Inner: ByteSource> {
    var inner: Inner
    let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 17, alignment: 16)
    var start = 0
    var end = 0
    var atEnd = false

    var available: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[start..<end]) }

    mutating func fill() throws(OCIError) {
        guard start == end, !atEnd else { return }
        start = 0
        end = try inner.read(into: storage)
        if end == 0 { atEnd = true }
    }

    func release() { storage.deallocate() }
}

/// gzip (RFC 1952) decompression; several concatenated members are one stream, as in gzip(1).
final class GzipSource<Inner: ByteSource>: ByteSource {
    private var input: InputBuffer<Inner>
    private var stream = z_stream()
    private var memberEnded = false
    private let what: String

    init(_ inner: Inner, what: String) throws(OCIError) {
        input = InputBuffer(inner: inner)
        self.what = what
        // 15 + 16: gzip wrapper only.
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            input.release()
            throw .system(SystemError("inflateInit", path: what, code: ENOMEM))
        }
    }

    deinit {
        inflateEnd(&stream)
        input.release()
    }

    var innerSource: Inner { input.inner }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        while true {
            try input.fill()
            if memberEnded {
                // Another member may follow; anything else after a member is an error.
                if input.atEnd && input.start == input.end { return 0 }
                guard inflateReset(&stream) == Z_OK else { throw .badTar(layer: what, entry: nil, reason: "gzip reset failed") }
                memberEnded = false
                continue
            }
            if input.atEnd { throw .badTar(layer: what, entry: nil, reason: "gzip stream is truncated") }
            let available = input.available
            stream.next_in = UnsafeMutablePointer(mutating: available.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(available.count)
            stream.next_out = buffer.baseAddress?.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = uInt(buffer.count)
            let result = inflate(&stream, Z_NO_FLUSH)
            input.start = input.end - Int(stream.avail_in)
            let produced = buffer.count - Int(stream.avail_out)
            switch result {
            case Z_STREAM_END:
                memberEnded = true
            case Z_OK, Z_BUF_ERROR:
                break
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(result)"
                throw .badTar(layer: what, entry: nil, reason: "gzip data is corrupt: \(message)")
            }
            if produced > 0 { return produced }
        }
    }
}

/// zstd decompression; concatenated frames are one stream.
final class ZstdSource<Inner: ByteSource>: ByteSource {
    private var input: InputBuffer<Inner>
    private let context: OpaquePointer
    private let what: String
    /// Whether the last frame was complete when the input ended.
    private var frameComplete = true

    init(_ inner: Inner, what: String) throws(OCIError) {
        input = InputBuffer(inner: inner)
        self.what = what
        guard let context = ZSTD_createDCtx() else {
            input.release()
            throw .system(SystemError("zstd", path: what, code: ENOMEM))
        }
        // Frames may not demand a window larger than 128 MiB (a bounded memory cost).
        ZSTD_DCtx_setParameter(context, ZSTD_d_windowLogMax, 27)
        self.context = context
    }

    deinit {
        ZSTD_freeDCtx(context)
        input.release()
    }

    var innerSource: Inner { input.inner }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        while true {
            try input.fill()
            if input.atEnd {
                guard frameComplete else { throw .badTar(layer: what, entry: nil, reason: "zstd stream is truncated") }
                return 0
            }
            let available = input.available
            var inBuffer = ZSTD_inBuffer(src: available.baseAddress, size: available.count, pos: 0)
            var outBuffer = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
            let result = ZSTD_decompressStream(context, &outBuffer, &inBuffer)
            if ZSTD_isError(result) != 0 {
                throw .badTar(layer: what, entry: nil, reason: "zstd data is corrupt: \(String(cString: ZSTD_getErrorName(result)))")
            }
            input.start += inBuffer.pos
            frameComplete = result == 0
            if outBuffer.pos > 0 { return outBuffer.pos }
        }
    }
}

extension ByteSource {
    /// Fills `buffer` completely; returns how many bytes were read (less only at the end).
    mutating func readFully(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        var total = 0
        while total < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[total...]))
            if n == 0 { break }
            total += n
        }
        return total
    }
}

/// A pipe or other unseekable descriptor, read to its end.
package struct DescriptorSource: ByteSource {
    let fd: Int32

    package init(fd: Int32) { self.fd = fd }

    package mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        try systemCall { () throws(SystemError) in try readSome(fd, into: buffer, path: "input") }
    }
}

/// Reports the bytes read through it (for progress bars).
struct ProgressSource<Inner: ByteSource>: ByteSource {
    var inner: Inner
    let report: (UInt64) -> Void

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        let count = try inner.read(into: buffer)
        if count > 0 { report(UInt64(count)) }
        return count
    }
}
