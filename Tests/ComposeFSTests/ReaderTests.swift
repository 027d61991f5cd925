import ComposeFS
import Crypto
import Dumpfile
import EROFS
import Foundation
import Testing
import TestSupport

// MARK: Helpers

/// Vectors with an expected image digest.
private func readerVectorNames() -> [String] {
    SharedAssets.vectorNames().filter { $0.hasSuffix(".sha256") }.map { String($0.dropLast(".sha256".count)) }
}

/// Runs a program and returns its standard output.
private func runProgram(_ path: String, _ arguments: [String]) throws -> [UInt8] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    // Read before waiting, so a full pipe cannot block the child.
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw ReaderTestError("\(path) \(arguments) exited with status \(process.terminationStatus)")
    }
    return Array(output)
}

private struct ReaderTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

private func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

private func readImage(_ image: [UInt8], filter: Set<[UInt8]>? = nil) throws(ImageFormatError) -> Inode {
    try ImageReader.read(image, filter: filter)
}

private func dumpText(_ root: Inode) -> String {
    String(decoding: DumpfileWriter.dump(root: root), as: UTF8.self)
}


/// A tree exercising every part of the format: nested and block directories,
/// inline and block symlinks, inline content with and without a tail, external
/// files, hard links, devices, whiteouts and shared and escaped xattrs.
private let sampleDump: String = {
    var lines = [
        "/ 4096 40755 3 0 0 0 1700000000.5 - - - trusted.overlay.foo=bar user.a=1 security.selinux=x\\x00",
        "/dev 0 40755 2 0 0 0 1700000000.5 - - - user.a=1",
        "/dev/null 0 20666 1 0 0 259 1700000000.5 - - - user.a=1",
        "/dev/sda 0 60660 1 0 6 2048 1600000000.0 - - -",
        "/dev/fifo 0 10644 1 0 0 0 1700000000.5 - - -",
        "/dev/whiteout 0 20000 1 0 0 0 1700000000.5 - - - user.b=2",
        "/files 0 40700 2 1000 1000 0 1700000000.5 - - -",
        "/files/abc 100 100644 2 0 0 0 1700000000.5 abc - - user.overlay.x=y",
        "/files/backed 123456789 100644 1 70000 70000 0 1700000000.5 12/3456 - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "/files/empty 0 100644 1 0 0 0 1700000000.5 - - -",
        "/files/inline 5 100644 1 0 0 0 1700000000.5 - hello -",
        "/files/link 100 @100644 2 0 0 0 1700000000.5 /files/abc - -",
        "/files/short 3 120777 1 0 0 0 1700000000.5 abc - -",
        "/files/long 3000 120777 1 0 0 0 1700000000.5 \(String(repeating: "x", count: 3000)) - -",
        "/files/inline-4097 4097 100644 1 0 0 0 1700000000.5 - \(String(repeating: "a", count: 4097)) -",
        "/files/inline-4096 4096 100644 1 0 0 0 1700000000.5 - \(String(repeating: "b", count: 4096)) -",
        "/wide 0 40755 2 0 0 0 1700000000.5 - - -",
    ]
    // Enough for a directory with a full block and an inline tail.
    let long = String(repeating: "n", count: 170)
    for i in 0..<24 { lines.append("/wide/\(long)-\(i) 0 100644 1 0 0 0 1700000000.5 - - - user.shared=\(i % 3)") }
    return lines.joined(separator: "\n") + "\n"
}()

/// The sample as a version 1 image (its whiteout sets the opaque xattrs).
private func sampleImage() throws -> [UInt8] {
    let root = try DumpfileParser.parse(Array(sampleDump.utf8), strict: true)
    return try ImageWriter.image(root: root, options: ImageOptions(minVersion: 1, maxVersion: 1))
}

// MARK: Tests

@Suite struct ReaderTests {
    /// What the reference test suite checks per vector: the image digest, and that
    /// image → tree → dumpfile → tree → image reproduces the image exactly.
    @Test(.enabled(if: SharedAssets.runVectorTests, SharedAssets.vectorsMissing))
    func vectorsArePresent() throws {
        let directory = try SharedAssets.vectors()
        #expect(readerVectorNames().count >= 14, "vectors with digests in \(directory)")
    }

    @Test(.enabled(if: SharedAssets.runVectorTests, SharedAssets.vectorsMissing), arguments: readerVectorNames())
    func vectorRoundTrip(name: String) throws {
        let path = try SharedAssets.vectors() + "/" + name
        #if DEBUG
        // About 30 s unoptimized, while the other vectors cover the same ground.
        if name.hasPrefix("cs9-x86_64-developer") && ProcessInfo.processInfo.environment["COMPOSEFS_SLOW_TESTS"] == nil {
            print("skipping \(name) in a debug build (set COMPOSEFS_SLOW_TESTS=1 to run it)")
            return
        }
        #endif
        let text = name.hasSuffix(".gz") ? try runProgram("/bin/gzip", ["-dc", path]) : Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        let expected = try String(contentsOfFile: path + ".sha256", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var options = ImageOptions()
        var pinned: UInt32?
        if let version = try? String(contentsOfFile: path + ".version", encoding: .utf8) {
            let v = try #require(UInt32(version.trimmingCharacters(in: .whitespacesAndNewlines)))
            options = ImageOptions(minVersion: v, maxVersion: v)
            pinned = v
        }
        // The reference runs its vectors with CFS_PARSE_STRICT, except these.
        let strict = !["no-newline.dump", "longlink.dump", "honggfuzz-longlink-unterminated.dump"].contains(name)

        let image = try ImageWriter.image(root: try DumpfileParser.parse(text, strict: strict), options: options)
        #expect(sha256Hex(image) == expected)
        if let pinned {
            #expect(try image.withUnsafeBytes { try ImageReader.version(of: $0) } == pinned)
        }

        let dump = DumpfileWriter.dump(root: try readImage(image))
        let again = try ImageWriter.image(root: try DumpfileParser.parse(dump, strict: strict), options: options)
        #expect(again == image, "image → dump → image is not reproducible")

        if SharedAssets.runCReferenceTests {
            let referenceInfo = try SharedAssets.cTool("composefs-info")
            let file = NSTemporaryDirectory() + "/reader-test-\(getpid())-\(name).img"
            defer { try? FileManager.default.removeItem(atPath: file) }
            try Data(image).write(to: URL(fileURLWithPath: file))
            let reference = try runProgram(referenceInfo, ["dump", file])
            #expect(dump == reference, "dump differs from the reference composefs-info dump")
        }
    }

    // (Not compared with the reference: its reader gets the payloads of /files/abc
    // and /files/backed wrong, see `redirectStripsOneSlash`.)
    @Test func sampleRoundTrips() throws {
        let image = try sampleImage()
        let root = try readImage(image)
        let dump = DumpfileWriter.dump(root: root)
        let again = try ImageWriter.image(root: try DumpfileParser.parse(dump, strict: true), options: ImageOptions(minVersion: 1, maxVersion: 1))
        #expect(again == image)

        let text = String(decoding: dump, as: UTF8.self)
        // The writer's overlay xattrs are undone; the escaped ones come back.
        #expect(text.contains("/files/abc 100 100644 2 0 0 0 1700000000.5 abc - - user.overlay.x=y\n"))
        #expect(text.contains("/files/link 100 @100644 2 0 0 0 1700000000.5 /files/abc - - user.overlay.x=y\n"))
        #expect(text.contains("/files/backed 123456789 100644 1 70000 70000 0 1700000000.5 12/3456 - 0123456789abcdef"))
        #expect(text.contains("/dev/whiteout 0 20000 1 0 0 0 1700000000.5 - - - user.b=2\n"))
        #expect(text.hasPrefix("/ 4096 40755 5 0 0 0 1700000000.5 - - - "))
        #expect(text.contains("trusted.overlay.foo=bar") && !text.contains("trusted.overlay.opaque=y"))
        #expect(!text.contains("/00 "))  // The root's whiteouts are not part of the tree.
    }

    /// A redirect whose entry needs no padding: the reference reader takes one byte
    /// past the value here (up to the next NUL); the payload must be exactly the path.
    @Test func redirectStripsOneSlash() throws {
        let root = try DumpfileParser.parse(Array("/ 0 40755 2 0 0 0 0.0 - - -\n/f 10 100644 1 0 0 0 0.0 abc - - user.z=1\n".utf8))
        let read = try readImage(try ImageWriter.image(root: root))
        #expect(read.entry(named: Array("f".utf8))?.inode.payload == Array("abc".utf8))
    }

    @Test func filterLoadsOnlyNamedRootEntries() throws {
        let root = try readImage(try sampleImage(), filter: [Array("files".utf8), Array("nothing".utf8)])
        #expect(root.entries.map { String(decoding: $0.name, as: UTF8.self) } == ["files"])
        #expect(root.entry(named: Array("files".utf8))?.inode.entries.count == 9)
    }

    @Test func hardlinkBeforeItsPrimaryPrintsThePrimaryPath() throws {
        let root = Inode(mode: FileMode.directory | 0o755)
        let file = Inode(mode: FileMode.regular | 0o644)
        file.nlink = 2
        try root.addEntry(Array("a".utf8), file, isHardlink: true)
        try root.addEntry(Array("b".utf8), file)
        #expect(dumpText(root) == """
            / 0 40755 1 0 0 0 0.0 - - -
            /a 0 @100644 2 0 0 0 0.0 /b - -
            /b 0 100644 2 0 0 0 0.0 - - -

            """)
    }

    @Test func dumpEscapesFields() throws {
        let root = try DumpfileParser.parse(Array("""
            / 0 40755 2 0 0 0 -5.7 - - - a\\x3db=c\\x3d\\x20
            /- 1 100644 1 0 0 0 0.0 - - -
            /x\\x20y 1 100644 1 0 0 0 0.0 - \\x2d -
            /l 1 120777 1 0 0 0 0.0 \\x2d - -

            """.utf8))
        #expect(dumpText(root) == """
            / 0 40755 2 0 0 0 -5.7 - - - a\\x3db=c\\x3d\\x20
            /- 1 100644 1 0 0 0 0.0 - - -
            /l 1 120777 1 0 0 0 0.0 \\x2d - -
            /x\\x20y 1 100644 1 0 0 0 0.0 - \\x2d -

            """)
    }

    @Test func headerChecks() throws {
        var image = try sampleImage()
        #expect(try image.withUnsafeBytes { try ImageReader.version(of: $0) } == 1)
        image[4] = 2  // Header version.
        #expect(throws: ImageFormatError.unsupported("unsupported composefs header version 2")) { try readImage(image) }
        image[4] = 1
        image[0] ^= 0xFF
        #expect(throws: ImageFormatError.self) { try readImage(image) }
        image[0] ^= 0xFF
        image[EROFSConstants.superblockOffset + 12] = 9  // Block size bits.
        #expect(throws: ImageFormatError.self) { try readImage(image) }
    }

    /// A directory entry pointing back at the root must fail, not recurse forever.
    @Test func directoryLoopIsRejected() throws {
        let root = try DumpfileParser.parse(Array("/ 0 40755 2 0 0 0 0.0 - - -\n/a 0 40755 2 0 0 0 0.0 - - -\n/a/zz 0 40755 2 0 0 0 0.0 - - -\n".utf8))
        var image = try ImageWriter.image(root: root)
        // In /a's block the names ".", ".." and "zz" follow the three dirents: point
        // the last dirent (zz's) at the root.
        let names = Array("...zz".utf8)
        let at = try #require(image.indices.first { image[$0..<min($0 + names.count, image.count)].elementsEqual(names) })
        let rootNid = UInt64(image[EROFSConstants.superblockOffset + 14]) | UInt64(image[EROFSConstants.superblockOffset + 15]) << 8
        for i in 0..<8 { image[at - Dirent.size + i] = UInt8(truncatingIfNeeded: rootNid >> (8 * UInt64(i))) }
        let error = #expect(throws: ImageFormatError.self) { try readImage(image) }
        #expect(error?.description.contains("reached twice") == true, "\(String(describing: error))")
    }

    /// Truncated and corrupted images must fail cleanly or load, never crash or hang.
    @Test func hostileImages() throws {
        var image = try sampleImage()
        var loaded = 0
        image.withUnsafeBytes { buffer in
            for length in stride(from: 0, through: buffer.count, by: 13) {
                if (try? ImageReader.read(UnsafeRawBufferPointer(rebasing: buffer[..<length]))) != nil { loaded += 1 }
            }
        }
        var random = SplitMix64(seed: 0x636F_6D70_6F73_6566)
        let metadataEnd = min(image.count, 24 * 1024)
        for _ in 0..<2500 {
            // A few bytes, mostly in the metadata (superblock, inodes, xattrs); restored afterwards.
            var saved: [(offset: Int, byte: UInt8)] = []
            for _ in 0...random.int(below: 4) {
                let offset = random.int(below: random.int(below: 4) == 0 ? image.count : metadataEnd)
                saved.append((offset, image[offset]))
                image[offset] = UInt8(truncatingIfNeeded: random.next())
            }
            if let root = try? readImage(image) {
                loaded += 1
                _ = DumpfileWriter.dump(root: root)
            }
            for (offset, byte) in saved.reversed() { image[offset] = byte }
        }
        #expect(loaded > 0)
        #expect(image == (try sampleImage()))
    }
}
