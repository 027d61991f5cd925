// End-to-end tests of the mkcomposefs binary on real directory trees and dumpfiles.

import CComposeFSSys
import Foundation
import FsVerity
import Testing
import TestSupport

@Suite(.serialized) struct MkcomposefsTests {
    /// A tree with every kind of file, fixed contents, modes and mtimes.
    static func makeTree(at root: URL) throws -> Bool {
        let fm = FileManager.default
        try fm.createDirectory(at: root.appendingPathComponent("dir/sub"), withIntermediateDirectories: true)
        func file(_ path: String, _ bytes: [UInt8], mode: Int = 0o644) throws {
            let url = root.appendingPathComponent(path)
            try Data(bytes).write(to: url)
            chmod(url.path, mode_t(mode))
        }
        try file("small.txt", Array("hello\n".utf8))
        try file("exactly64", [UInt8](repeating: 0x41, count: 64))
        try file("just65", [UInt8](repeating: 0x42, count: 65), mode: 0o600)
        try file("empty", [])
        try file("dir/big.bin", (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) })
        try file("dir/sub/copy.bin", (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 9) })
        try file("run.sh", Array("#!/bin/sh\necho composefs\n".utf8), mode: 0o755)
        try file("name with space=and\\slash", Array("odd name".utf8))
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("dir/link").path, withDestinationPath: "../small.txt")
        #expect(mkfifo(root.appendingPathComponent("fifo").path, 0o640) == 0)
        // Modes independent of the umask.
        for (path, mode) in [("", 0o755), ("dir", 0o750), ("dir/sub", 0o700), ("fifo", 0o640)] {
            chmod(root.appendingPathComponent(path).path, mode_t(mode))
        }
        let xattrValue = Array("some value".utf8)
        let xattrsWork = cfs_lsetxattr(root.appendingPathComponent("small.txt").path, "user.comment", xattrValue, xattrValue.count) == 0
        // Every mtime fixed, children before parents.
        var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_700_000_000, tv_nsec: 123_456_789)]
        let paths = ["small.txt", "exactly64", "just65", "empty", "dir/big.bin", "dir/sub/copy.bin", "run.sh",
                     "name with space=and\\slash", "dir/link", "fifo", "dir/sub", "dir", ""]
        for path in paths {
            #expect(utimensat(AT_FDCWD, root.appendingPathComponent(path).path, &times, AT_SYMLINK_NOFOLLOW) == 0)
        }
        return xattrsWork
    }

    @Test func imageOfDirectoryMatchesReference() throws {
        let work = try TemporaryDirectory()
        let tree = work.url.appendingPathComponent("tree")
        let xattrs = try Self.makeTree(at: tree)
        let image = work.url.appendingPathComponent("out.cfs").path
        let store = work.url.appendingPathComponent("objects").path
        let result = try runTool("mkcomposefs", ["--digest-store=\(store)", "--print-digest", tree.path, image])
        #expect(result.status == 0, "\(result.stderr)")
        let printed = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        // The printed digest is the image's fs-verity digest.
        let fd = open(image, O_RDONLY)
        defer { close(fd) }
        #expect(try printed == FsVerity.digest(fileDescriptor: fd).hex)

        // Objects: one per distinct file over 64 bytes, named by digest, same content.
        let objects = try listFiles(store)
        #expect(objects.count == 2)
        for object in objects {
            let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: store + "/" + object)))
            #expect(object == FsVerity.digest(of: data).objectPath)
        }

        // The same tree digested without writing gives the same digest.
        let only = try runTool("mkcomposefs", ["--print-digest-only", tree.path])
        #expect(only.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == printed)

        if let fsck = findExecutable("fsck.erofs") {
            #expect(try run(fsck, [image]).status == 0)
        }
        // Bit-identical to the reference mkcomposefs.
        if SharedAssets.runCReferenceTests {
            let reference = try SharedAssets.cTool("mkcomposefs")
            let refImage = work.url.appendingPathComponent("ref.cfs").path
            #expect(try run(reference, [tree.path, refImage]).status == 0)
            #expect(try Data(contentsOf: URL(fileURLWithPath: refImage)) == Data(contentsOf: URL(fileURLWithPath: image)))
        }
        // Golden digest of this tree from the reference mkcomposefs (root-owned files, user xattrs).
        if getuid() == 0 && getgid() == 0 && xattrs {
            #expect(printed == "accbf24440d3e52d8fa5a9d488267c33d950fc844f2891e575824729f6e9bfc7")
        } else {
            print("skipping golden digest: needs root-owned files and user xattrs")
        }
    }

    @Test func optionsChangeTheImage() throws {
        let work = try TemporaryDirectory()
        let tree = work.url.appendingPathComponent("tree")
        _ = try Self.makeTree(at: tree)
        var digests: Set<String> = []
        for options in [[], ["--use-epoch"], ["--skip-xattrs"], ["--user-xattrs"], ["--threads=1"]] {
            let result = try runTool("mkcomposefs", options + ["--print-digest-only", tree.path])
            #expect(result.status == 0, "\(result.stderr)")
            digests.insert(result.stdout)
        }
        // --user-xattrs keeps the user.* xattr and threads don't matter.
        #expect(digests.count == 3)
    }

    @Test func badInputFailsCleanly() throws {
        let work = try TemporaryDirectory()
        let image = work.url.appendingPathComponent("out.cfs").path

        let missing = try runTool("mkcomposefs", [work.url.appendingPathComponent("nope").path, image])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("nope"))
        #expect(!FileManager.default.fileExists(atPath: image))

        let dump = work.url.appendingPathComponent("bad.dump")
        try Data("/ 4096 40755 2 0 0 0 0.0 - - -\n/x 0 100644 1 zz 0 0 0.0 - - -\n".utf8).write(to: dump)
        let bad = try runTool("mkcomposefs", ["--from-file", dump.path, image])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("line 2") && bad.stderr.contains("/x"), "\(bad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: image))
        #expect(try listFiles(work.url.path) == ["bad.dump"])

        #expect(try runTool("mkcomposefs", ["--from-file", dump.path]).status == 1)
        #expect(try runTool("mkcomposefs", ["--print-digest-only", dump.path, image]).status == 1)
        #expect(try runTool("mkcomposefs", ["--threads=0", dump.path, image]).status == 1)
        #expect(try runTool("mkcomposefs", ["--min-version=x", dump.path, image]).status == 1)
    }

    @Test(.enabled(if: SharedAssets.runVectorTests, SharedAssets.vectorsMissing))
    func shouldFailVectorsThroughTheBinary() throws {
        let assets = try SharedAssets.vectors()
        let work = try TemporaryDirectory()
        let image = work.url.appendingPathComponent("out.cfs").path
        for name in try FileManager.default.contentsOfDirectory(atPath: assets).sorted() where name.hasPrefix("should-fail-") {
            let result = try runTool("mkcomposefs", ["--from-file", assets + "/" + name, image])
            #expect(result.status == 1, "\(name) should fail")
            #expect(result.stderr.hasPrefix("mkcomposefs: "), "\(name): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: image), "\(name) left output behind")
        }
    }

    @Test(.enabled(if: SharedAssets.runVectorTests, SharedAssets.vectorsMissing))
    func vectorsFromStdinMatchRecordedDigests() throws {
        let assets = try SharedAssets.vectors()
        let work = try TemporaryDirectory()
        let image = work.url.appendingPathComponent("out.cfs").path
        let nonStrict: Set = ["no-newline.dump", "longlink.dump", "honggfuzz-longlink-unterminated.dump"]
        let names = try FileManager.default.contentsOfDirectory(atPath: assets).sorted()
        var checked = 0
        for name in names where name.hasSuffix(".dump") || name.hasSuffix(".dump.gz") {
            let expectedFile = assets + "/" + name + ".sha256"
            guard FileManager.default.fileExists(atPath: expectedFile) else { continue }
            checked += 1
            var input = assets + "/" + name
            if name.hasSuffix(".gz") {
                input = work.url.appendingPathComponent("input.dump").path
                let gunzip = try run("/bin/sh", ["-c", "gzip -dc \"$0\" > \"$1\"", assets + "/" + name, input])
                #expect(gunzip.status == 0, "\(gunzip.stderr)")
            }
            var args = ["--from-file", "-", image]
            if let version = try? String(contentsOfFile: assets + "/" + name + ".version", encoding: .utf8) {
                let v = version.trimmingCharacters(in: .whitespacesAndNewlines)
                args = ["--min-version=\(v)", "--max-version=\(v)"] + args
            }
            var environment = ProcessInfo.processInfo.environment
            environment["CFS_PARSE_STRICT"] = nonStrict.contains(name) ? nil : "1"
            let result = try runTool("mkcomposefs", args, stdin: input, environment: environment)
            #expect(result.status == 0, "\(name): \(result.stderr)")
            let expected = try String(contentsOfFile: expectedFile, encoding: .utf8).prefix(64)
            #expect(try sha256Hex(of: image) == String(expected), "\(name)")
            if let fsck = findExecutable("fsck.erofs") {
                #expect(try run(fsck, [image]).status == 0, "fsck.erofs rejects the image of \(name)")
            }
        }
        #expect(checked == names.filter { $0.hasSuffix(".sha256") }.count)
    }
}
