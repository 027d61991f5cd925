// zstd frames for split streams, made as composefs-rs makes them.

import CZstd
import ComposeFSBase

#if canImport(Glibc)
import Glibc
#endif

/// One zstd frame, made as composefs-rs makes it: data pushed with ZSTD_e_continue, then one
/// ZSTD_e_end on empty input (which for empty data gives the 9-byte frame with size 0).
func zstdCompress(_ input: [UInt8]) throws(RepositoryError) -> [UInt8] {
    guard let context = ZSTD_createCCtx() else { throw .system(SystemError("zstd", path: "compress", code: ENOMEM)) }
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
        try withBytes(input) { (data) throws(RepositoryError) in try run(data, ZSTD_e_continue) }
    }
    try run(UnsafeRawBufferPointer(start: nil, count: 0), ZSTD_e_end)
    return output
}

/// Every frame of `input`, decompressed; bounded so a hostile stream cannot exhaust memory.
func zstdDecompress(_ input: [UInt8], limit: Int = 1 << 32) throws(RepositoryError) -> [UInt8] {
    guard !input.isEmpty else { return [] }
    guard let context = ZSTD_createDCtx() else { throw .system(SystemError("zstd", path: "decompress", code: ENOMEM)) }
    defer { ZSTD_freeDCtx(context) }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: ZSTD_DStreamOutSize())
    try withBytes(input) { (data) throws(RepositoryError) in
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
