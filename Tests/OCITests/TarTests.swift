// The tar decoder and the layer import, on archives built here byte by byte: every header
// variant OCI layers use, the limits that stop hostile layers, and a mutation run that checks
// damaged archives only ever fail with an error naming the layer.

import ComposeFS
import Foundation
import FsVerity
import Repository
import TestSupport
import Testing

@testable import OCI

/// Builds tar archives field by field, so tests can write what real tools write and what they never would.
struct TarBuilder {
    enum Magic { case ustar, gnu, v7 }

    private(set) var bytes: [UInt8] = []

    /// One header block. Numbers are octal text unless they need base-256 (or `base256` asks for it).
    mutating func header(
        _ name: String, type: Character = "0", size: UInt64 = 0, mode: UInt32 = 0o644, uid: UInt64 = 0, gid: UInt64 = 0,
        mtime: Int64 = 1_700_000_000, link: String = "", prefix: String = "", magic: Magic = .ustar,
        device: (major: UInt32, minor: UInt32) = (0, 0), base256: Bool = false, extra: [(offset: Int, bytes: [UInt8])] = []
    ) {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ text: [UInt8], _ offset: Int, _ width: Int) {
            for (i, byte) in text.prefix(width).enumerated() { block[offset + i] = byte }
        }
        func number(_ value: UInt64, _ offset: Int, _ width: Int, forceBase256: Bool = false) {
            let octal = String(value, radix: 8)
            if forceBase256 || octal.count > width - 1 {
                var v = value
                for i in stride(from: width - 1, to: 0, by: -1) {
                    block[offset + i] = UInt8(v & 0xFF)
                    v >>= 8
                }
                block[offset] = 0x80
            } else {
                put(Array((String(repeating: "0", count: width - 1 - octal.count) + octal).utf8), offset, width)
            }
        }
        put(Array(name.utf8), 0, 100)
        number(UInt64(mode), 100, 8)
        number(uid, 108, 8, forceBase256: base256)
        number(gid, 116, 8)
        number(size, 124, 12, forceBase256: base256)
        if mtime < 0 {
            // Base-256 two's complement.
            var v = mtime
            for i in stride(from: 11, through: 0, by: -1) {
                block[136 + i] = UInt8(truncatingIfNeeded: v)
                v >>= 8  // arithmetic: the sign fills the high bytes
            }
        } else {
            number(UInt64(mtime), 136, 12)
        }
        block[156] = UInt8(ascii: type.unicodeScalars.first!)
        put(Array(link.utf8), 157, 100)
        switch magic {
        case .ustar: put(Array("ustar\u{0}00".utf8), 257, 8)
        case .gnu: put(Array("ustar  \u{0}".utf8), 257, 8)
        case .v7: break
        }
        number(UInt64(device.major), 329, 8)
        number(UInt64(device.minor), 337, 8)
        put(Array(prefix.utf8), 345, 155)
        for patch in extra { put(patch.bytes, patch.offset, patch.bytes.count) }
        Self.setChecksum(&block)
        bytes += block
    }

    static func setChecksum(_ block: inout [UInt8]) {
        for i in 148..<156 { block[i] = UInt8(ascii: " ") }
        let sum = block.reduce(0) { $0 + Int($1) }
        let text = Array(String(sum, radix: 8).utf8)
        let field = [UInt8](repeating: UInt8(ascii: "0"), count: 6 - text.count) + text + [0, UInt8(ascii: " ")]
        for (i, byte) in field.enumerated() { block[148 + i] = byte }
    }

    mutating func data(_ content: [UInt8]) {
        bytes += content
        bytes += [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
    }

    mutating func file(_ name: String, _ content: [UInt8], mode: UInt32 = 0o644) {
        header(name, size: UInt64(content.count), mode: mode)
        data(content)
    }

    /// A pax extended header ('x', or 'g' for a global one) with the records in order.
    mutating func pax(_ records: [(String, String)], global: Bool = false) {
        var body: [UInt8] = []
        for (key, value) in records {
            let payload = " \(key)=\(value)\n".utf8.count
            var length = payload + 1
            while String(length).utf8.count + payload != length { length += 1 }
            body += Array("\(length) \(key)=\(value)\n".utf8)
        }
        header("PaxHeaders/x", type: global ? "g" : "x", size: UInt64(body.count))
        data(body)
    }

    /// A GNU long name ('L') or long link target ('K').
    mutating func gnuLong(_ type: Character, _ value: String) {
        let body = Array(value.utf8) + [0]
        header("././@LongLink", type: type, size: UInt64(body.count), magic: .gnu)
        data(body)
    }

    mutating func end(trailing: [UInt8] = []) {
        bytes += [UInt8](repeating: 0, count: 1024) + trailing
    }
}

/// An archive in memory, read in uneven pieces as a network stream would deliver it.
struct MemorySource: ByteSource {
    let bytes: [UInt8]
    var offset = 0
    var pieceSize = 777

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        let count = min(buffer.count, pieceSize, bytes.count - offset)
        guard count > 0 else { return 0 }
        bytes.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: count) }
        offset += count
        return count
    }
}

@Suite struct TarTests {
    /// Imports `tar` and reads the stored stream back; checks it reproduces the archive byte for byte.
    func importAndRead(_ tar: [UInt8], in scratch: ScratchRepository) throws -> [LayerEntry] {
        let result = try LayerImporter.importLayer(from: MemorySource(bytes: tar), into: scratch.repository, layer: "test")
        #expect(result.diffID == Digest.sha256(tar))
        let stream = try SplitStream(result.stream, algorithm: .sha256)
        var reassembled: [UInt8] = []
        try stream.forEachChunk { (chunk) throws(RepositoryError) in
            switch chunk {
            case let .inline(bytes): reassembled += bytes
            case let .external(id): reassembled += try scratch.repository.readObject(id)
            }
        }
        #expect(reassembled == tar)
        return try LayerReader.entries(of: stream, layer: "test")
    }

    func entries(_ tar: [UInt8]) throws -> [LayerEntry] {
        try importAndRead(tar, in: try ScratchRepository())
    }

    /// The message of the error importing `tar` throws.
    func failure(_ tar: [UInt8]) throws -> String {
        let scratch = try ScratchRepository()
        do {
            _ = try LayerImporter.importLayer(from: MemorySource(bytes: tar), into: scratch.repository, layer: "test")
        } catch {
            return error.description
        }
        Issue.record("importing succeeded")
        return ""
    }

    @Test func ustarFieldsAndContent() throws {
        var tar = TarBuilder()
        tar.header("dir/", type: "5", mode: 0o755, uid: 1000, gid: 100, mtime: 1_600_000_000)
        tar.file("dir/small", Array("hello".utf8), mode: 0o4755)
        let big = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        tar.header("name", size: UInt64(big.count), prefix: "a/prefix/of/the/path")
        tar.data(big)
        tar.header("dir/link", type: "2", mode: 0o777, link: "../target")
        tar.header("dir/hard", type: "1", link: "dir/small")
        tar.header("dev/null", type: "3", mode: 0o666, device: (1, 3))
        tar.header("dev/sda", type: "4", mode: 0o660, device: (8, 0))
        tar.header("fifo", type: "6")
        tar.header("old-dir/", type: "0", magic: .v7)
        tar.end()
        let read = try entries(tar.bytes)
        #expect(read.map { String(decoding: $0.entry.path, as: UTF8.self) } == [
            "dir/", "dir/small", "a/prefix/of/the/path/name", "dir/link", "dir/hard", "dev/null", "dev/sda", "fifo", "old-dir/",
        ])
        #expect(read.map(\.entry.kind) == [
            .directory, .regular, .regular, .symlink, .hardlink, .characterDevice, .blockDevice, .fifo, .directory,
        ])
        #expect(read[0].entry.uid == 1000 && read[0].entry.gid == 100 && read[0].entry.permissions == 0o755)
        #expect(read[0].entry.mtime == Timestamp(seconds: 1_600_000_000, nanoseconds: 0))
        #expect(read[1].entry.permissions == 0o4755)
        guard case let .inline(small) = read[1].content else { Issue.record("small file not inline"); return }
        #expect(small == Array("hello".utf8))
        guard case let .object(id) = read[2].content else { Issue.record("large file not an object"); return }
        #expect(id == FsVerity.digest(of: big))
        #expect(read[3].entry.linkTarget == Array("../target".utf8))
        #expect(read[4].entry.linkTarget == Array("dir/small".utf8))
        #expect(read[5].entry.deviceMajor == 1 && read[5].entry.deviceMinor == 3)
        #expect(read[6].entry.deviceMajor == 8 && read[6].entry.deviceMinor == 0)
    }

    @Test func inlineLimitIsSixtyFourBytes() throws {
        var tar = TarBuilder()
        tar.file("64", [UInt8](repeating: 1, count: 64))
        tar.file("65", [UInt8](repeating: 2, count: 65))
        tar.end()
        let read = try entries(tar.bytes)
        guard case .inline = read[0].content, case .object = read[1].content else {
            Issue.record("expected 64 bytes inline and 65 as an object")
            return
        }
    }

    @Test func paxRecordsOverrideTheHeader() throws {
        let longPath = String(repeating: "long-directory-name/", count: 20) + "file"
        let longTarget = String(repeating: "t", count: 300)
        var tar = TarBuilder()
        tar.pax([
            ("path", longPath), ("uid", "4294967295"), ("gid", "70000"), ("mtime", "1700000000.123456789"),
            ("SCHILY.xattr.user.comment", "a value"), ("SCHILY.xattr.security.capability", "cap"),
            ("SCHILY.xattr.user.dropped", "x"), ("SCHILY.xattr.user.dropped", ""),
            ("LIBARCHIVE.xattr.user.ignored", "eA=="), ("atime", "1.5"), ("uname", "someone"),
        ])
        tar.file("short-name", Array("pax".utf8))
        tar.pax([("linkpath", longTarget), ("mtime", "-1.25")])
        tar.header("link", type: "2", link: "short")
        tar.pax([("mtime", "")])  // an empty value unsets: the header's mtime stands
        tar.header("unset", mtime: 42)
        tar.end()
        let read = try entries(tar.bytes)
        #expect(read.count == 3)
        #expect(read[0].entry.path == Array(longPath.utf8))
        #expect(read[0].entry.uid == 4_294_967_295 && read[0].entry.gid == 70000)
        #expect(read[0].entry.mtime == Timestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789))
        #expect(read[0].entry.xattrs.map { String(decoding: $0.key, as: UTF8.self) } == ["user.comment", "security.capability"])
        #expect(read[0].entry.xattrs.first?.value == Array("a value".utf8))
        #expect(read[1].entry.linkTarget == Array(longTarget.utf8))
        #expect(read[1].entry.mtime == Timestamp(seconds: -2, nanoseconds: 750_000_000))
        #expect(read[2].entry.mtime == Timestamp(seconds: 42, nanoseconds: 0))
    }

    @Test func globalPaxHeadersAreNotApplied() throws {
        var tar = TarBuilder()
        tar.pax([("uid", "5"), ("path", "ignored")], global: true)
        tar.header("file", uid: 7)
        tar.end()
        let read = try entries(tar.bytes)
        #expect(read.count == 1 && read[0].entry.uid == 7 && read[0].entry.path == Array("file".utf8))
    }

    @Test func gnuLongNamesAndBase256() throws {
        let longName = String(repeating: "n", count: 250)
        let longLink = String(repeating: "l/", count: 100)
        var tar = TarBuilder()
        tar.gnuLong("L", longName)
        tar.gnuLong("K", longLink)
        tar.header("trunc", type: "2", link: "trunc", magic: .gnu)
        tar.header("big-ids", uid: 1 << 20, base256: true)
        tar.header("before-epoch", mtime: -86400, magic: .gnu)
        tar.end()
        let read = try entries(tar.bytes)
        #expect(read[0].entry.path == Array(longName.utf8) && read[0].entry.linkTarget == Array(longLink.utf8))
        #expect(read[1].entry.uid == 1 << 20)
        #expect(read[2].entry.mtime == Timestamp(seconds: -86400, nanoseconds: 0))
    }

    @Test func gnuSparseHeaderWithExtensionBlocks() throws {
        // Five segments: four in the header, one in an extension block.
        var segments: [(UInt64, UInt64)] = []
        for i in 0..<5 { segments.append((UInt64(i) * 8192, 512)) }
        func octal(_ v: UInt64, _ width: Int) -> [UInt8] {
            let text = String(v, radix: 8)
            return Array((String(repeating: "0", count: width - 1 - text.count) + text).utf8)
        }
        var extra: [(offset: Int, bytes: [UInt8])] = []
        for (i, segment) in segments.prefix(4).enumerated() {
            extra.append((386 + 24 * i, octal(segment.0, 12)))
            extra.append((386 + 24 * i + 12, octal(segment.1, 12)))
        }
        extra.append((482, [1]))
        extra.append((483, octal(40960, 12)))
        let content = (0..<2560).map { UInt8(truncatingIfNeeded: $0 / 512 + 1) }
        var tar = TarBuilder()
        tar.header("sparse", type: "S", size: 2560, magic: .gnu, extra: extra)
        var extensionBlock = [UInt8](repeating: 0, count: 512)
        for (i, byte) in octal(segments[4].0, 12).enumerated() { extensionBlock[i] = byte }
        for (i, byte) in octal(segments[4].1, 12).enumerated() { extensionBlock[12 + i] = byte }
        var bytes = tar.bytes + extensionBlock
        tar = TarBuilder()
        tar.data(content)
        tar.end()
        bytes += tar.bytes
        let read = try entries(bytes)
        #expect(read.count == 1)
        #expect(read[0].entry.size == 40960 && read[0].entry.dataSize == 2560)
        #expect(read[0].entry.sparseMap?.map(\.offset) == segments.map(\.0))
    }

    @Test func trailingBytesAfterTheEndMarkerAreKept() throws {
        var tar = TarBuilder()
        tar.file("f", [1, 2, 3])
        tar.end(trailing: [UInt8](repeating: 0, count: 8192) + Array("junk after the end".utf8))
        #expect(try entries(tar.bytes).count == 1)
    }

    @Test func dataOnANonRegularEntryStaysOutOfMemory() throws {
        // A directory header claiming 3 MiB of data: kept (the stream still reproduces the tar), as an object.
        var tar = TarBuilder()
        let payload = [UInt8](repeating: 0x5A, count: 3 << 20)
        tar.header("dir", type: "5", size: UInt64(payload.count))
        tar.data(payload)
        tar.header("link", type: "2", size: 100, link: "dir")
        tar.data([UInt8](repeating: 1, count: 100))
        tar.end()
        let read = try entries(tar.bytes)
        guard case .object = read[0].content, case .inline = read[1].content else {
            Issue.record("expected the 3 MiB as an object and the 100 bytes inline")
            return
        }
        #expect(read[0].entry.size == 0)
    }

    /// umoci 0.4.7 and older end layers right after the last entry's data: no padding, no
    /// end-of-archive blocks (umoci #436). Such layers import, and their streams give them back
    /// byte for byte; so do archives cut anywhere in the padding or the end blocks.
    @Test func layersEndingAfterTheLastEntrysDataAreAccepted() throws {
        var tar = TarBuilder()
        tar.file("dir/small", Array("hello".utf8))
        tar.file("large", Array(repeating: 3, count: 1000))
        tar.end()
        let dataEnd = 512 + 512 + 512 + 1000
        for length in [dataEnd, dataEnd + 1, dataEnd + 24, 512 + 512 + 512 + 1024, tar.bytes.count - 1, 512 + 5] {
            let entries = try entries(Array(tar.bytes[0..<length]))
            #expect(entries.map { String(decoding: $0.entry.path, as: UTF8.self) } == (length == 512 + 5 ? ["dir/small"] : ["dir/small", "large"]), "\(length)")
            if length >= dataEnd, case .object = entries[1].content {} else if length >= dataEnd {
                Issue.record("\(length): the large file is not an object")
            }
        }
    }

    @Test func damagedArchivesFailWithTheReason() throws {
        var good = TarBuilder()
        good.file("file", Array("content".utf8))
        good.end()

        var flipped = good.bytes
        flipped[10] ^= 0x40
        #expect(try failure(flipped).contains("checksum mismatch"))

        // Entry data cut short is refused, inline or an object's; so is a cut header.
        var long = TarBuilder()
        long.file("small", Array(repeating: 7, count: 60))
        long.file("large", Array(repeating: 9, count: 3000))
        long.end()
        #expect(try failure(Array(long.bytes[0..<(512 + 30)])).contains("archive is truncated (in entry data)"))
        #expect(try failure(Array(long.bytes[0..<(1024 + 512 + 2000)])).contains("archive is truncated (in file content)"))
        #expect(try failure(Array(long.bytes[0..<(1024 + 100)])).contains("archive is truncated (in a header)"))
        #expect(try failure(Array("not a tar at all".utf8)).contains("truncated"))

        var unknown = TarBuilder()
        unknown.header("odd", type: "X")
        unknown.end()
        #expect(try failure(unknown.bytes).contains("unsupported tar entry type 'X'"))

        var badPax = TarBuilder()
        badPax.header("PaxHeaders/x", type: "x", size: 12)
        badPax.data(Array("99 path=a\n\0\0".utf8))
        badPax.header("file")
        badPax.end()
        #expect(try failure(badPax.bytes).contains("malformed pax record"))

        var badTime = TarBuilder()
        badTime.pax([("mtime", "12x")])
        badTime.header("file")
        badTime.end()
        #expect(try failure(badTime.bytes).contains("invalid pax mtime '12x'"))

        var danglingPax = TarBuilder()
        danglingPax.pax([("path", "nothing follows")])
        danglingPax.end()
        #expect(try failure(danglingPax.bytes).contains("archive ends after an extended header"))

        var sparseOutside = TarBuilder()
        sparseOutside.pax([("GNU.sparse.size", "100"), ("GNU.sparse.map", "50,100")])
        sparseOutside.file("sparse", [UInt8](repeating: 1, count: 100))
        sparseOutside.end()
        #expect(try failure(sparseOutside.bytes).contains("invalid sparse map"))
    }

    @Test func extendedHeadersAreBounded() throws {
        // One header over the limit, and many headers that add up to more than it.
        var single = TarBuilder()
        single.header("PaxHeaders/x", type: "x", size: 2 << 20)
        single.end()
        #expect(try failure(single.bytes).contains("extended headers of over 1048576 bytes"))

        var repeated = TarBuilder()
        let value = String(repeating: "v", count: 200_000)
        for _ in 0..<6 { repeated.pax([("comment", value)]) }
        repeated.header("file")
        repeated.end()
        #expect(try failure(repeated.bytes).contains("extended headers of over 1048576 bytes"))

        // The count starts again after each entry.
        var spaced = TarBuilder()
        for i in 0..<6 {
            spaced.pax([("comment", value)])
            spaced.header("file\(i)")
        }
        spaced.end()
        #expect(try entries(spaced.bytes).count == 6)
    }

    /// Damaged copies of an archive that uses every header kind: each import either fails with an
    /// error naming the layer or succeeds and reproduces its input. (Header checksums are fixed up
    /// after the damage, so most copies get past the first check.)
    @Test func mutatedArchivesNeverCrash() throws {
        var tar = TarBuilder()
        tar.pax([("path", "pax/" + String(repeating: "p", count: 120)), ("SCHILY.xattr.user.x", "1"), ("mtime", "5.5")])
        tar.file("ignored", [UInt8](repeating: 7, count: 100))
        tar.gnuLong("L", "gnu/" + String(repeating: "g", count: 150))
        tar.header("ignored", type: "2", link: "target", magic: .gnu)
        tar.header("dir/", type: "5")
        tar.header("hard", type: "1", link: "dir")
        tar.header("dev", type: "3", device: (4, 5))
        tar.pax([("GNU.sparse.major", "0"), ("GNU.sparse.minor", "1"), ("GNU.sparse.size", "9000"), ("GNU.sparse.map", "0,10,8000,20")])
        tar.file("sparse", [UInt8](repeating: 3, count: 30))
        tar.end()
        let original = tar.bytes
        let headerBlocks = stride(from: 0, to: original.count - 1024, by: 512).filter { offset in
            original[offset + 257..<offset + 262].elementsEqual("ustar".utf8)
        }

        var random = SplitMix64(seed: 0x7461_7274_6573_7473)
        let scratch = try ScratchRepository()
        var failures = 0
        for _ in 0..<1500 {
            var damaged = original
            for _ in 0...random.int(below: 4) {
                let block = headerBlocks[random.int(below: headerBlocks.count)]
                let spot = random.chance(0.8) ? block + random.int(below: 512) : random.int(below: damaged.count)
                damaged[spot] = random.chance(0.5) ? UInt8(truncatingIfNeeded: random.next()) : [0, 0x30, 0x37, 0x80, 0xFF][random.int(below: 5)]
                var header = Array(damaged[block..<block + 512])
                TarBuilder.setChecksum(&header)
                damaged.replaceSubrange(block..<block + 512, with: header)
            }
            if random.chance(0.1) { damaged.removeLast(random.int(below: damaged.count)) }
            do {
                _ = try importAndRead(damaged, in: scratch)
            } catch let error as OCIError {
                failures += 1
                #expect(error.description.hasPrefix("layer test"), "\(error)")
            }
        }
        // Most damage is noticed; some (a changed mode, say) is a valid archive.
        #expect(failures > 100 && failures < 1500)
    }
}
