// End-to-end tests of composefs-info and composefs-dump.

import Foundation
import Testing

@Suite(.serialized) struct InfoDumpTests {
    static let demo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("examples/demo.dump").path

    @Test func dumpRoundTripsThroughEveryTool() throws {
        let work = try TemporaryDirectory()
        let image = work.url.appendingPathComponent("demo.cfs").path
        #expect(try runTool("mkcomposefs", ["--from-file", Self.demo, image]).status == 0)

        // composefs-info dump → mkcomposefs --from-file - reproduces the image.
        let dump = try runTool("composefs-info", ["dump", image])
        #expect(dump.status == 0)
        let dumpFile = work.url.appendingPathComponent("demo.txt").path
        try Data(dump.stdout.utf8).write(to: URL(fileURLWithPath: dumpFile))
        let again = work.url.appendingPathComponent("again.cfs").path
        #expect(try runTool("mkcomposefs", ["--from-file", "-", again], stdin: dumpFile).status == 0)
        #expect(FileManager.default.contents(atPath: again) == FileManager.default.contents(atPath: image))

        // composefs-dump SRC DEST rewrites the same bytes; without DEST it prints the dump.
        let rewritten = work.url.appendingPathComponent("rewritten.cfs").path
        #expect(try runTool("composefs-dump", [image, rewritten]).status == 0)
        #expect(FileManager.default.contents(atPath: rewritten) == FileManager.default.contents(atPath: image))
        #expect(try runTool("composefs-dump", [image]).stdout == dump.stdout)

        #expect(dump.stdout.contains("/etc/motd.link 1024 @100644 "))
        #expect(dump.stdout.contains("/etc/hostname 10 100644 1 0 0 0 1700000000.0 - composefs\\n - user.note=hello\\x3dworld"))
    }

    @Test func listingsAndObjects() throws {
        let work = try TemporaryDirectory()
        let image = work.url.appendingPathComponent("demo.cfs").path
        #expect(try runTool("mkcomposefs", ["--from-file", Self.demo, image]).status == 0)

        let ls = try runTool("composefs-info", ["ls", image])
        #expect(ls.stdout.contains("/bin\t-> usr/bin\n"))
        #expect(ls.stdout.contains("/etc/\t\n"))

        let objects = try runTool("composefs-info", ["objects", image]).stdout.split(separator: "\n")
        #expect(objects.count == 2)
        #expect(objects == objects.sorted())

        // One object present in the basedir: only the other is missing.
        let basedir = work.url.appendingPathComponent("objects")
        let present = basedir.appendingPathComponent(String(objects[0]))
        try FileManager.default.createDirectory(at: present.deletingLastPathComponent(), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: present.path, contents: Data())
        let missing = try runTool("composefs-info", ["--basedir=\(basedir.path)", "missing-objects", image])
        #expect(missing.stdout.split(separator: "\n") == [objects[1]])

        let filtered = try runTool("composefs-info", ["--filter=etc", "dump", image])
        #expect(filtered.stdout.split(separator: "\n").count == 5)
        #expect(try runTool("composefs-info", ["--filter=a/b", "dump", image]).status == 1)
    }

    @Test func measureFileMatchesKnownDigests() throws {
        let work = try TemporaryDirectory()
        let a = work.url.appendingPathComponent("a.txt").path
        let b = work.url.appendingPathComponent("b.txt").path
        try Data("hello world\n".utf8).write(to: URL(fileURLWithPath: a))
        try Data("foo bar baz\n".utf8).write(to: URL(fileURLWithPath: b))
        let result = try runTool("composefs-info", ["measure-file", a, b])
        #expect(result.stdout == """
            37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92
            91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b

            """)
    }

    @Test func badImagesAreRejected() throws {
        let work = try TemporaryDirectory()
        let junk = work.url.appendingPathComponent("junk.cfs").path
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: junk))
        for arguments in [["dump", junk], ["ls", work.url.appendingPathComponent("missing").path], ["bogus", junk], ["dump"]] {
            let result = try runTool("composefs-info", arguments)
            #expect(result.status == 1, "\(arguments)")
            #expect(!result.stderr.isEmpty)
        }
        let dest = work.url.appendingPathComponent("out.cfs").path
        #expect(try runTool("composefs-dump", [junk, dest]).status == 1)
        #expect(!FileManager.default.fileExists(atPath: dest))
    }
}
