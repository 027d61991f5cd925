// Split streams: composefs-rs's byte layout, reassembly, and what gc and fsck make of them.

import Foundation
import FsVerity
import TestSupport
import Testing

@testable import Repository

@Suite struct SplitStreamTests {
    @Test func zstdFramesMatchTheReference() throws {
        // The frames composefs-rs (libzstd, level 3) writes for empty and short data.
        #expect(try zstdCompress([]) == [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x00, 0x01, 0x00, 0x00])
        #expect(try zstdCompress(Array("0:abc\0".utf8))
            == [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58, 0x31, 0x00, 0x00, 0x30, 0x3a, 0x61, 0x62, 0x63, 0x00])
        let data = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
        #expect(try zstdDecompress(try zstdCompress(data)) == data)
    }

    @Test func writesReadsAndReassembles() throws {
        let scratch = try ScratchRepository()
        let repository = scratch.repository
        let big = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let bigID = try repository.ensureObject(big)
        var otherWriter = SplitStreamWriter(algorithm: .sha256, contentType: 0)
        otherWriter.writeInline(Array("another stream".utf8))
        let otherID = try repository.writeStream(try otherWriter.finish(), name: "other-stream")
        var writer = SplitStreamWriter(algorithm: .sha256, contentType: 0x7265_7961_6c69_636f)  // "ocilayer"
        writer.writeInline(Array("header".utf8))
        writer.writeExternal(bigID, size: UInt64(big.count))
        writer.writeInline(Array("middle".utf8))
        writer.writeExternal(bigID, size: UInt64(big.count))
        writer.addNamedStreamRef("other", otherID)
        let bytes = try writer.finish()
        #expect(Array(bytes[0..<11]) == Array("SplitStream".utf8))
        let stream = try SplitStream(bytes, algorithm: .sha256)
        #expect(stream.references.objects == [bigID])
        #expect(stream.size == UInt64(12 + 2 * big.count))
        #expect(stream.namedRefs == ["other": otherID])

        try repository.writeStream(bytes, name: "test-stream", ref: "mine/one")
        var output: [UInt8] = []
        try repository.cat("refs/mine/one") { output += $0 }
        #expect(output == Array("header".utf8) + big + Array("middle".utf8) + big)
        // The ref keeps the stream and its object through gc; fsck finds it whole.
        let collected = try repository.collectGarbage(dryRun: false)
        #expect(collected.objectsRemoved == 0)
        try repository.cat("test-stream") { _ in }
        let report = try repository.fsck()
        #expect(report.ok, "\(report.errors)")
        #expect(report.streamsChecked == 2)
    }

    @Test func damagedStreamsAreErrors() throws {
        var writer = SplitStreamWriter(algorithm: .sha256, contentType: 0)
        writer.writeInline(Array(repeating: 1, count: 1000))
        let bytes = try writer.finish()
        var generator = SystemRandomNumberGenerator()
        for length in [0, 10, 31, 40, 111, bytes.count - 1] {
            #expect(throws: RepositoryError.self) { _ = try SplitStream(Array(bytes.prefix(length)), algorithm: .sha256) }
        }
        for _ in 0..<300 {
            var mutated = bytes
            mutated[Int.random(in: 0..<mutated.count, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
            // Either an error or a stream: never a crash.
            _ = try? SplitStream(mutated, algorithm: .sha256)
        }
        #expect(throws: RepositoryError.self) { _ = try SplitStream(bytes, algorithm: .sha512) }
    }
}
