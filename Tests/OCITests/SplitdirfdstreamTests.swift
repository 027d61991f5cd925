// The splitdirfdstream-v0 format: chunks laid out as composefs-rs 0.9 lays them, read back
// through a pipe in pieces, and what is not a stream refused with where and why.

import ComposeFSBase
import Foundation
import Testing

@testable import OCI

struct SplitdirfdstreamTests {
    /// Reads every chunk of `bytes`, written to a pipe by another thread in small pieces.
    func readBack(_ bytes: [UInt8]) throws(SplitdirfdError) -> [SplitdirfdChunk] {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        let writer = ends[1]
        let thread = Thread {
            for piece in stride(from: 0, to: bytes.count, by: 3) {
                let end = min(piece + 3, bytes.count)
                _ = bytes[piece..<end].withUnsafeBytes { write(writer, $0.baseAddress, $0.count) }
            }
            close(writer)
        }
        thread.start()
        defer { close(ends[0]) }
        var reader = SplitdirfdReader(fileDescriptor: ends[0], path: "pipe")
        var chunks: [SplitdirfdChunk] = []
        while let chunk = try reader.nextChunk() { chunks.append(chunk) }
        return chunks
    }

    @Test func layoutAndRoundTrip() throws {
        // composefs-rs's external_wire_layout: [0x02][9 u64][2 u32][2 u32]"ab".
        #expect(SplitdirfdChunk.fileBacked(directory: 2, length: 9, name: Array("ab".utf8)).encoded
            == [2, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0x61, 0x62])
        #expect(SplitdirfdChunk.metadata(Array("real".utf8)).encoded == [0, 4, 0, 0, 0] + Array("real".utf8))
        #expect(SplitdirfdChunk.metadata([]).encoded == [], "empty metadata is never sent")
        #expect(SplitdirfdChunk.inlineData([]).encoded == [1, 0, 0, 0, 0], "empty inline data is")
        let chunks: [SplitdirfdChunk] = [
            .metadata(Array("header".utf8)), .fileBacked(directory: 0, length: 7, name: Array("ab/cdef".utf8)),
            .inlineData([UInt8](repeating: 9, count: 70_000)), .inlineData([]), .metadata(Array("footer".utf8)),
        ]
        #expect(try readBack(chunks.flatMap(\.encoded)) == chunks)
        #expect(try readBack([]) == [])
    }

    @Test func malformedStreamsAreRefused() {
        func refusal(_ bytes: [UInt8]) -> String? {
            do {
                _ = try readBack(bytes)
                return nil
            } catch {
                return error.description
            }
        }
        let header = SplitdirfdChunk.metadata(Array("header".utf8)).encoded
        #expect(refusal(header + [0x03]) == "splitdirfdstream: unknown chunk type byte 0x03 at byte 11")
        #expect(refusal([0]) == "splitdirfdstream: truncated chunk at byte 1")
        #expect(refusal(header + [0, 100, 0, 0, 0] + [UInt8](repeating: 0, count: 10)) == "splitdirfdstream: truncated chunk at byte 16")
        #expect(refusal([2, 0, 0, 0, 0, 0]) == "splitdirfdstream: truncated chunk at byte 1")
        #expect(refusal([0, 0, 0, 0, 32]) == "splitdirfdstream: chunk at byte 0: inline chunk size 536870912 exceeds maximum 268435456")
        #expect(refusal([2] + [UInt8](repeating: 0, count: 12) + [0x01, 0x10, 0, 0])
            == "splitdirfdstream: chunk at byte 0: filename length 4097 exceeds maximum 4096")
    }

    @Test func namesMayNotLeaveTheirDirectory() {
        let long = [UInt8](repeating: UInt8(ascii: "a"), count: 4096)
        for (name, problem) in [
            ("", "empty filename"), ("/abs", "absolute path"), ("a/../b", "`..` component"), ("..", "`..` component"),
            ("a/b/..", "`..` component"), ("foo\0bar", "embedded NUL"),
        ] {
            #expect(SplitdirfdChunk.nameProblem(Array(name.utf8)) == problem, "\(name)")
        }
        for name in ["a/b/c", "a/./b", "..foo", "foo..", "a/..foo"] { #expect(SplitdirfdChunk.nameProblem(Array(name.utf8)) == nil, "\(name)") }
        #expect(SplitdirfdChunk.nameProblem(long) == nil)
        #expect(SplitdirfdChunk.nameProblem(long + [0x61]) == "filename length 4097 exceeds maximum 4096")
    }
}
