// cfsctl side by side with composefs-rs 0.9.0's (../shared/reference): the same ids, kernel
// arguments, dumpfiles, meta.json and listings for the same input, and repositories that each
// tool reads, checks, lists, mounts and collects after the other wrote them.

import CComposeFSSys
import Foundation
import Testing
import TestSupport

@Suite(.serialized, .enabled(if: SharedAssets.runRSReferenceTests, SharedAssets.rsReferenceMissing))
struct ComposefsRSTests {
    static func reference(_ arguments: [String]) throws -> ProcessResult {
        try run(try SharedAssets.rsTool("cfsctl"), arguments)
    }

    /// Runs both with the same arguments; the results must be the same, byte for byte.
    static func expectSame(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let ours = try runTool("cfsctl", arguments)
        let theirs = try reference(arguments)
        #expect(ours.status == theirs.status, "\(arguments): exit \(ours.status) vs \(theirs.status): \(ours.stderr) | \(theirs.stderr)",
            sourceLocation: sourceLocation)
        #expect(ours.stdout == theirs.stdout, "\(arguments)", sourceLocation: sourceLocation)
    }

    /// A container-like tree: /usr with xattrs and an old mtime, /run with content, /boot and
    /// /sysroot, inline and external files, a hard link, a symlink, and (as root) devices, a
    /// whiteout and privileged xattrs.
    static func makeContainerTree(at root: String, seed: Int = 1) throws {
        let manager = FileManager.default
        for directory in ["usr/bin", "usr/lib/sub", "etc", "boot", "sysroot", "run/x", "var", "tmp"] {
            try manager.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
        }
        func write(_ path: String, _ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: root + "/" + path)) }
        try write("usr/bin/big", (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) })
        try write("usr/bin/small", Array("small\n".utf8))
        try write("usr/lib/sub/exact64", Array(repeating: UInt8(ascii: "x"), count: 64))
        try write("usr/lib/sub/exact65", Array(repeating: UInt8(ascii: "y"), count: 65))
        try write("usr/lib/empty", [])
        try write("etc/hostname", Array("hello \(seed)\n".utf8))
        try write("boot/vmlinuz", Array("junk\n".utf8))
        try write("run/x/f", Array("run file\n".utf8))
        #expect(link(root + "/usr/bin/big", root + "/usr/bin/big-link") == 0)
        #expect(link(root + "/etc/hostname", root + "/run/x/hostname-link") == 0)
        #expect(symlink("../usr/bin/big", root + "/etc/link") == 0)
        #expect(mkfifo(root + "/etc/fifo", 0o644) == 0)
        func setXattr(_ path: String, _ key: String, _ value: [UInt8]) {
            #expect(cfs_lsetxattr(root + "/" + path, key, value, value.count) == 0, "\(key) on \(path)")
        }
        setXattr("usr", "user.usrattr", Array("x".utf8))
        setXattr(".", "user.rootattr", Array("y".utf8))
        setXattr("usr/bin/big", "user.eq", Array("a=b c-".utf8))
        setXattr("run/x", "user.run", Array("r".utf8))
        if geteuid() == 0 {
            #expect(mknod(root + "/etc/null", S_IFCHR | 0o644, dev_t((1 << 8) | 3)) == 0)
            #expect(mknod(root + "/usr/lib/whiteout", S_IFCHR | 0o644, 0) == 0)
            setXattr("usr/bin/small", "security.capability", [1, 0, 0, 2, 0, 0x20] + Array(repeating: 0, count: 14))
            setXattr("etc/hostname", "trusted.t1", Array("tv".utf8))
            setXattr("usr", "trusted.overlay.foo", Array("o".utf8))
            setXattr("etc", "security.selinux", Array("system_u:object_r:etc_t:s0\0".utf8))
        }
        var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_700_000_000, tv_nsec: 123_456_789)]
        #expect(utimensat(AT_FDCWD, root + "/usr", &times, 0) == 0)
        times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 1), timespec(tv_sec: 1_600_000_000, tv_nsec: 1)]
        #expect(utimensat(AT_FDCWD, root + "/etc/hostname", &times, 0) == 0)
    }

    @Test func treesGiveTheSameIdsDumpsAndKernelArguments() throws {
        let work = try TemporaryDirectory()
        let tree = work.url.appendingPathComponent("root").path
        try Self.makeContainerTree(at: tree)
        let shapes: [[String]] = [[], ["--no-propagate-usr-to-root"], ["--xattrs", "keep-user-xattrs"], ["--bootable"]]
        for shape in shapes {
            try Self.expectSame(["--no-repo", "create-dumpfile"] + shape + [tree])
            for hash in ["sha256", "sha512"] {
                for version in [[], ["--erofs-version", "0"], ["--erofs-version", "2"]] {
                    try Self.expectSame(["--no-repo", "--hash", hash] + version + ["compute-id"] + shape + [tree])
                }
            }
        }
        try Self.expectSame(["--no-repo", "compute-id", tree])
        for options in [[], ["--insecure"], ["--erofs-version", "2"], ["--insecure", "--erofs-version", "2", "--hash", "sha256"]] {
            try Self.expectSame(["--no-repo"] + options + ["compute-karg", tree])
            try Self.expectSame(["--no-repo"] + options + ["compute-karg", "--no-propagate-usr-to-root", tree])
        }
        // Trees that cannot be container or boot roots fail the same way.
        try FileManager.default.removeItem(atPath: tree + "/sysroot")
        try Self.expectSame(["--no-repo", "compute-karg", tree])
        try FileManager.default.removeItem(atPath: tree + "/usr")
        try Self.expectSame(["--no-repo", "compute-id", tree])
        try Self.expectSame(["--no-repo", "compute-id", "--no-propagate-usr-to-root", tree])
        let missing = try runTool("cfsctl", ["--no-repo", "compute-id", tree])
        #expect(missing.stderr == "Error: Directory entry \"usr\" does not exist\n")
    }

    /// composefs-rs picks the build time (the smallest mtime) comparing seconds as unsigned
    /// numbers, so a file from before 1970 does not set it as it would in the C writer: the
    /// images must still be composefs-rs's, in every format.
    @Test func mtimesBefore1970PickComposefsRSBuildTime() throws {
        let work = try TemporaryDirectory()
        let tree = work.url.appendingPathComponent("root").path
        try FileManager.default.createDirectory(atPath: tree + "/usr", withIntermediateDirectories: true)
        for (name, seconds) in [("old", -2), ("new", 1_700_000_000), ("epoch", 0)] {
            try Data(name.utf8).write(to: URL(fileURLWithPath: tree + "/usr/" + name))
            var times = [timespec(tv_sec: seconds, tv_nsec: 5), timespec(tv_sec: seconds, tv_nsec: 5)]
            #expect(utimensat(AT_FDCWD, tree + "/usr/" + name, &times, 0) == 0)
        }
        for version in ["0", "1", "2"] {
            try Self.expectSame(["--no-repo", "--erofs-version", version, "compute-id", tree])
            try Self.expectSame(["--no-repo", "--erofs-version", version, "compute-id", "--no-propagate-usr-to-root", tree])
        }
    }

    @Test func initWritesTheSameMetadata() throws {
        let work = try TemporaryDirectory()
        for algorithm in ["fsverity-sha256-12", "fsverity-sha512-12"] {
            for version in [[], ["--erofs-version", "0"], ["--erofs-version", "1"], ["--erofs-version", "2"]] {
                let name = algorithm + version.joined()
                let ours = work.url.appendingPathComponent("ours-" + name).path
                let theirs = work.url.appendingPathComponent("theirs-" + name).path
                let arguments = ["init", "--insecure", "--algorithm", algorithm] + version
                let created = try runTool("cfsctl", arguments + [ours])
                let reference = try Self.reference(arguments + [theirs])
                #expect(created.status == 0 && reference.status == 0, "\(created.stderr) \(reference.stderr)")
                #expect(created.stdout.replacingOccurrences(of: ours, with: theirs) == reference.stdout)
                #expect(try Data(contentsOf: URL(fileURLWithPath: ours + "/meta.json"))
                    == Data(contentsOf: URL(fileURLWithPath: theirs + "/meta.json")), "\(name)")
                // Again with the same settings: fine; with others: refused; --ensure keeps it.
                let otherVersion = version == ["--erofs-version", "2"] ? "1" : "2"
                for again in [arguments, ["init", "--insecure", "--algorithm", algorithm, "--erofs-version", otherVersion],
                    ["init", "--insecure", "--ensure", "--erofs-version", "0", "--algorithm", algorithm]]
                {
                    let oursAgain = try runTool("cfsctl", again + [ours])
                    let theirsAgain = try Self.reference(again + [theirs])
                    #expect(oursAgain.status == theirsAgain.status, "\(again): \(oursAgain.stderr) | \(theirsAgain.stderr)")
                    #expect(oursAgain.stdout.replacingOccurrences(of: ours, with: theirs) == theirsAgain.stdout)
                }
            }
        }
    }

    /// What `cfsctl --repo REPO …` prints about a repository, from both tools.
    static func expectSameViews(_ repo: String, images: [String], files: [String]) throws {
        for arguments in [["images"], ["images", "--json"], ["images", "--no-trunc"], ["fsck"], ["fsck", "--json"], ["fsck", "--metadata-only"]] {
            try expectSame(["--repo", repo] + arguments)
        }
        for image in images {
            try expectSame(["--repo", repo, "dump-files", image] + files)
            try expectSame(["--repo", repo, "dump-files", "--backing-path-only", image] + files.filter { !$0.hasSuffix("/") && $0 != "/usr" })
            let ours = try runTool("cfsctl", ["--repo", repo, "image-objects", image])
            let theirs = try reference(["--repo", repo, "image-objects", image])
            #expect(ours.status == 0 && theirs.status == 0, "\(ours.stderr) \(theirs.stderr)")
            #expect(Set(ours.stdout.split(separator: "\n")) == Set(theirs.stdout.split(separator: "\n")))
        }
    }

    @Test func repositoriesInterchange() throws {
        let work = try TemporaryDirectory()
        let tree = work.url.appendingPathComponent("root").path
        try Self.makeContainerTree(at: tree)
        let other = work.url.appendingPathComponent("other").path
        try Self.makeContainerTree(at: other, seed: 2)
        let files = ["/usr", "/etc/hostname", "usr/bin/", "/usr/bin/big-link"]
        for (writer, reader) in [("ours", "theirs"), ("theirs", "ours")] {
            func tool(_ name: String, _ arguments: [String]) throws -> ProcessResult {
                name == "ours" ? try runTool("cfsctl", arguments) : try Self.reference(arguments)
            }
            let repo = work.url.appendingPathComponent("repo-" + writer).path
            #expect(try tool(writer, ["init", "--insecure", repo]).status == 0)
            let created = try tool(writer, ["--repo", repo, "create-image", tree, "img"])
            #expect(created.status == 0, "\(created.stderr)")
            let expectedID = try runTool("cfsctl", ["--no-repo", "compute-id", tree]).stdout
            #expect(created.stdout == "sha512:" + expectedID, "\(writer)")
            let second = try tool(writer, ["--repo", repo, "--erofs-version", "2", "create-image", other, "nested/v2"])
            #expect(second.status == 0, "\(second.stderr)")
            // What the reader sees is what the writer sees.
            try Self.expectSameViews(repo, images: ["img", "refs/nested/v2", String(created.stdout.dropFirst(7).dropLast())], files: files)
            // The reader mounts the writer's image.
            if MountEnvironment.canMount {
                let mountpoint = work.url.appendingPathComponent("mnt").path
                try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
                let mounted = try tool(reader, ["--repo", repo, "mount", String(created.stdout.dropFirst(7).dropLast()), mountpoint])
                #expect(mounted.status == 0, "\(reader) mounting \(writer)'s image: \(mounted.stderr)")
                if mounted.status == 0 {
                    defer { unmountAndCheck(mountpoint) }
                    #expect(FileManager.default.contents(atPath: mountpoint + "/usr/bin/big")
                        == FileManager.default.contents(atPath: tree + "/usr/bin/big"))
                    #expect(FileManager.default.contents(atPath: mountpoint + "/etc/hostname")
                        == FileManager.default.contents(atPath: tree + "/etc/hostname"))
                }
            }
            // gc by the reader removes what the writer's refs no longer reach, and nothing else.
            #expect(unlink(repo + "/images/refs/nested/v2") == 0)
            let copy = repo + "-copy"
            #expect(try run("/bin/cp", ["-a", repo, copy]).status == 0)
            let collected = try tool(reader, ["--repo", repo, "gc"])
            let collectedByWriter = try tool(writer, ["--repo", copy, "gc"])
            #expect(collected.status == 0 && collected.stdout == collectedByWriter.stdout, "\(collected.stderr)\(collectedByWriter.stderr)")
            #expect(try listFiles(repo) == listFiles(copy))
            try Self.expectSameViews(repo, images: ["img"], files: files)
        }
    }

    @Test func repositoriesWithoutMetadataAreUpgradedAlike() throws {
        let work = try TemporaryDirectory()
        let tree = work.url.appendingPathComponent("root").path
        try Self.makeContainerTree(at: tree)
        let repo = work.url.appendingPathComponent("repo").path
        #expect(try Self.reference(["init", "--insecure", "--algorithm", "fsverity-sha256-12", repo]).status == 0)
        #expect(try Self.reference(["--repo", repo, "create-image", tree, "img"]).status == 0)
        #expect(unlink(repo + "/meta.json") == 0)
        let copy = repo + "-copy"
        #expect(try run("/bin/cp", ["-a", repo, copy]).status == 0)
        // --no-upgrade refuses; otherwise both write the same meta.json and carry on.
        let refused = try runTool("cfsctl", ["--repo", repo, "--no-upgrade", "images"])
        #expect(refused.status == 1 && refused.stderr.contains("meta.json not found"), "\(refused.stderr)")
        let ours = try runTool("cfsctl", ["--repo", repo, "images"])
        let theirs = try Self.reference(["--repo", copy, "images"])
        #expect(ours.status == 0 && ours.stdout == theirs.stdout, "\(ours.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: repo + "/meta.json")) == Data(contentsOf: URL(fileURLWithPath: copy + "/meta.json")))
        // init --ensure on one says it was upgraded; --reset-metadata keeps only the objects.
        #expect(unlink(repo + "/meta.json") == 0)
        #expect(unlink(copy + "/meta.json") == 0)
        for (name, path) in [("ours", repo), ("theirs", copy)] {
            let arguments = ["init", "--insecure", "--ensure", "--algorithm", "fsverity-sha256-12", path]
            let ensured = name == "ours" ? try runTool("cfsctl", arguments) : try Self.reference(arguments)
            #expect(ensured.status == 0 && ensured.stdout == "Upgraded legacy repository at \(path)\n", "\(ensured.stderr)")
            let reset = ["init", "--insecure", "--reset-metadata", "--algorithm", "fsverity-sha256-12", path]
            let wasReset = name == "ours" ? try runTool("cfsctl", reset) : try Self.reference(reset)
            #expect(wasReset.status == 0, "\(wasReset.stderr)")
            #expect(!FileManager.default.fileExists(atPath: path + "/images"))
        }
        #expect(try listFiles(repo) == listFiles(copy))
    }
}
