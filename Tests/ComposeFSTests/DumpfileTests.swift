import ComposeFS
import Dumpfile
import EROFS
import Foundation
import Testing
import TestSupport

private func parse(_ text: String, strict: Bool = false) throws -> Inode {
    try DumpfileParser.parse(Array(text.utf8), strict: strict)
}

/// Parses and writes, as mkcomposefs --from-file does.
private func build(_ text: String, strict: Bool = false) throws -> [UInt8] {
    try ImageWriter.image(root: try parse(text, strict: strict))
}

private func expectFailure(_ text: String, strict: Bool = false, containing fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        _ = try build(text, strict: strict)
        Issue.record("expected failure containing '\(fragment)'", sourceLocation: sourceLocation)
    } catch {
        #expect("\(error)".contains(fragment), "\(error)", sourceLocation: sourceLocation)
    }
}

@Suite struct DumpfileTests {
    @Test(.enabled(if: SharedAssets.runVectorTests, SharedAssets.vectorsMissing))
    func shouldFailVectorsAreRejectedWithLineNumbers() throws {
        let assets = URL(fileURLWithPath: try SharedAssets.vectors())
        let names = try FileManager.default.contentsOfDirectory(atPath: assets.path).filter {
            $0.hasPrefix("should-fail-") && $0.hasSuffix(".dump")
        }
        #expect(names.count >= 14)
        for name in names.sorted() {
            let data = try [UInt8](Data(contentsOf: assets.appendingPathComponent(name)))
            do {
                let root = try DumpfileParser.parse(data)
                _ = try ImageWriter.image(root: root)
                Issue.record("\(name) was accepted")
            } catch let error as DumpfileError {
                #expect(error.line > 0, "\(name): \(error)")
            } catch {
                // Rejected by the writer (file too big and the like): must name the file.
                #expect("\(error)".contains("/"), "\(name): \(error)")
            }
        }
    }

    @Test func escapingRoundTripsEveryByte() throws {
        let all = [UInt8](0...255)
        for style: EscapeStyle in [[], .equals, .loneDash, [.equals, .loneDash]] {
            let escaped = Escaping.escaped(all, style: style)
            #expect(!escaped.contains(UInt8(ascii: " ")))
            #expect(!escaped.contains(UInt8(ascii: "\n")))
            let back = try escaped.withUnsafeBytes { try Escaping.unescape($0) }
            #expect(back == all)
        }
        #expect(Escaping.escaped(Array("-".utf8), style: .loneDash) == Array("\\x2d".utf8))
        #expect(Escaping.escaped(Array("a=b c".utf8), style: .equals) == Array("a\\x3db\\x20c".utf8))
        #expect(Escaping.escaped(Array("a b".utf8), style: .keepSpace) == Array("a b".utf8))
    }

    @Test func badEscapesAreRejected() {
        for field in ["\\", "\\x", "\\x1", "\\xzz", "\\q"] {
            #expect(throws: DumpfileError.Reason.self) {
                _ = try Array(field.utf8).withUnsafeBytes { try Escaping.unescape($0) }
            }
        }
    }

    @Test func fieldsAreParsed() throws {
        let root = try parse(
            """
            / 4096 40755 2 10 20 0 100.5 - - - user.a=1 trusted.b=x\\x3dy
            /f 3 100600 1 1000 1000 0 -1.999999999 - abc - user.c=
            /dev 0 20644 1 0 0 1234 0.0 - - -
            /l 3 120777 1 0 0 0 0.0 /f\\x20 - -

            """)
        #expect(root.uid == 10 && root.gid == 20)
        #expect(root.mtime == Timestamp(seconds: 100, nanoseconds: 5))
        #expect(root.xattr(Array("trusted.b".utf8)) == Array("x=y".utf8))
        let f = try #require(root.entry(named: Array("f".utf8))?.inode)
        #expect(f.content == Array("abc".utf8) && f.size == 3 && f.mode == 0o100600)
        #expect(f.mtime.seconds == -1)
        #expect(f.xattr(Array("user.c".utf8)) == [])
        #expect(try #require(root.entry(named: Array("dev".utf8))?.inode).rdev == 1234)
        #expect(try #require(root.entry(named: Array("l".utf8))?.inode).payload == Array("/f ".utf8))
    }

    @Test func invalidLinesNameTheirLine() {
        let header = "/ 4096 40755 2 0 0 0 0.0 - - -\n"
        expectFailure(header + "/a 1 100644 1 0 0 0 0.0 - ab -\n", containing: "line 2: /a: invalid content size")
        expectFailure(header + "/a 0 100644 1 x 0 0 0.0 - - -\n", containing: "invalid integer 'x' for uid")
        expectFailure(header + "/a 0 100644 1 0 0 0 0 - - -\n", containing: "mtime nanoseconds")
        expectFailure(header + "/a 0 170644 1 0 0 0 0.0 - - -\n", containing: "invalid mode")
        expectFailure(header + "/a/b 0 100644 1 0 0 0 0.0 - - -\n", containing: "parent directory missing")
        expectFailure(header + "/a 0 100644 1 0 0 0 0.0 - - -\n/a/b 0 100644 1 0 0 0 0.0 - - -\n", containing: "parent must be a directory")
        expectFailure(header + "/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n", containing: "line 3: /a: path already exists")
        expectFailure(header + "/a 0 100644 1 0 0 0 0.0 - - - novalue\n", containing: "missing = in xattr")
        expectFailure(header + "/a 10 100644 1 0 0 0 0.0 - - abcd\n", containing: "invalid digest")
        expectFailure("/a 0 100644 1 0 0 0 0.0 - - -\n", containing: "root node not present")
        expectFailure("/ 0 100644 1 0 0 0 0.0 - - -\n", containing: "root must be a directory")
        expectFailure(header + header, containing: "multiple roots")
        expectFailure("", containing: "no files")
        expectFailure(header + "/a\u{0}b 0 100644 1 0 0 0 0.0 - - -\n", containing: "NUL")
        expectFailure(header + "/" + String(repeating: "n", count: 256) + " 0 100644 1 0 0 0 0.0 - - -\n", containing: "longer than 255")
    }

    @Test func hardlinks() throws {
        let header = "/ 4096 40755 2 0 0 0 0.0 - - -\n"
        // A link may come before its target and may point at another link.
        let root = try parse(
            header + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /c - -\n/c 5 100644 3 0 0 0 0.0 - hello -\n")
        let a = try #require(root.entry(named: Array("a".utf8)))
        let c = try #require(root.entry(named: Array("c".utf8)))
        #expect(a.isHardlink && !c.isHardlink && a.inode === c.inode)
        #expect(c.inode.nlink == 3)
        expectFailure(header + "/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n", containing: "cycle")
        expectFailure(header + "/a 0 @100644 1 0 0 0 0.0 /missing - -\n", containing: "no target at /missing")
        expectFailure(header + "/d 0 40755 1 0 0 0 0.0 - - -\n/a 0 @100644 1 0 0 0 0.0 /d - -\n", containing: "is a directory")
        expectFailure(header + "/a 0 @100644 1 0 0 0 0.0 - - -\n", containing: "no target path")
        expectFailure(header + "/a 0 @100644 1 0 0 0 0.0 /a - -\n", containing: "self-referential")
    }

    @Test func strictMode() throws {
        let header = "/ 4096 40755 2 0 0 0 0.0 - - -\n"
        let loose = header + "/a 0 100644 1 0 0 7 0.0 - - -\n/l 99 120777 1 0 0 0 0.0 target - -"
        _ = try build(loose)
        expectFailure(header + "/a 0 100644 1 0 0 7 0.0 - - -\n", strict: true, containing: "non-zero devnum")
        expectFailure(header + "/l 99 120777 1 0 0 0 0.0 target - -\n", strict: true, containing: "invalid symlink size")
        expectFailure(header + "/l 6 120777 1 0 0 0 0.0 target x -\n", strict: true, containing: "invalid content size")
        expectFailure(header + "/a 0 100644 1 0 0 0 0.0 - - -", strict: true, containing: "missing trailing newline")
    }

    @Test func integersFollowStrtoull() throws {
        let root = try parse("/ 4096 40755 2 +5 -1 0 99999999999999999999.0 - - -\n")
        #expect(root.uid == 5)
        #expect(root.gid == UInt32.max)
        #expect(root.mtime.seconds == -1)  // saturated to UINT64_MAX
    }

    @Test func versionIsRaisedOnlyForWhiteouts() throws {
        let plain = try parse("/ 4096 40755 2 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n")
        let whiteout = try parse("/ 4096 40755 2 0 0 0 0.0 - - -\n/a 0 20000 1 0 0 0 0.0 - - -\n")
        #expect(ImageWriter.effectiveVersion(for: plain, options: ImageOptions()) == 0)
        #expect(ImageWriter.effectiveVersion(for: whiteout, options: ImageOptions()) == 1)
        #expect(ImageWriter.effectiveVersion(for: whiteout, options: ImageOptions(minVersion: 0, maxVersion: 0)) == 0)
        let image = try ImageWriter.image(root: whiteout)
        #expect(image[12] == 1)  // composefs_version in the header
        #expect(throws: ImageWriteError.self) { try ImageWriter.image(root: plain, options: ImageOptions(minVersion: 3, maxVersion: 3)) }
    }
}

@Suite struct DumpfileFuzzTests {
    /// Random byte edits of a valid dumpfile must be accepted or rejected with an
    /// error, never crash, and accepted ones must produce a valid image.
    @Test func mutatedDumpfilesNeverCrash() throws {
        let seed = Array(
            """
            / 4096 40755 3 0 0 0 1.5 - - - user.a=1 trusted.overlay.x=2 security.selinux=ctx\\x00
            /d 4096 40755 2 0 0 0 2.0 - - -
            /d/f 100000 100644 2 1 1 0 3.0 ab/cdef - abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789 user.b=2
            /d/h 0 @100644 0 0 0 0 0.0 /d/f - -
            /l 4 120777 1 0 0 0 0.0 /d/f - -
            /w 0 20000 1 0 0 0 0.0 - - -
            /i 5 100600 1 0 0 0 0.0 - hello -
            /c 0 20644 1 0 0 1025 0.0 - - -

            """.utf8)
        let alphabet = Array(" /\\x0123456789-@.=\n".utf8) + [0, 0xFF]
        var rng = SplitMix64(seed: 42)
        var accepted = 0
        for _ in 0..<1500 {
            var bytes = seed
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let i = Int.random(in: 0..<bytes.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bytes[i] = alphabet.randomElement(using: &rng)!
                case 1: bytes.remove(at: i)
                default: bytes.insert(alphabet.randomElement(using: &rng)!, at: i)
                }
            }
            guard let root = try? DumpfileParser.parse(bytes) else { continue }
            guard let image = try? ImageWriter.image(root: root) else { continue }
            accepted += 1
            #expect(image.count % 4096 == 0)
        }
        #expect(accepted > 50)
    }
}
