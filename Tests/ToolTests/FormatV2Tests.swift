// Format 2 (composefs-rs's own layout) through the tools: mkcomposefs writes it from dumpfiles
// (as composefs-rs does) and from directories, composefs-info and composefs-dump read it,
// fsck.erofs accepts it, and kernel and FUSE mounts show its tree, in agreement.

import CComposeFSSys
import ComposeFS
import Dumpfile
import Foundation
import FsVerity
import Testing
import TestSupport

@Suite(.serialized) struct FormatV2Tests {
    static let backed = String(repeating: "ab", count: 32)
    static let byPath = String(repeating: "cd", count: 32)

    /// Every kind of file format 2 holds: whiteouts at the root (one with a name like the
    /// stubs of formats 0 and 1) and below, hard links, a backed file with a digest and one
    /// named by its path alone, a sparse file, the longest inline file and symlink, the
    /// user's own overlay xattrs, `lustre.`, an ACL, and times with nanoseconds (dropped).
    static let sampleDump = """
        / 0 40755 2 0 0 0 1700000000.123 - - - security.selinux=root_t trusted.overlay.opaque=y user.r=1
        /+early 5 100644 1 0 0 0 1.0 - hello - lustre.q=1 system.posix_acl_access=\\x02\\x00\\x00\\x00
        /aa 0 20000 1 0 0 0 2.0 - - -
        /backed 4097 100644 1 1000 1000 0 3.5 \(backed.prefix(2))/\(backed.dropFirst(2)) - \(backed) user.a=1
        /by-path 10 100644 1 0 0 0 4.0 ../objects/\(byPath.prefix(2).uppercased())/\(byPath.dropFirst(2)) - - user.a=1
        /dev 0 40755 2 0 0 0 5.0 - - -
        /dev/gone 0 20000 1 0 0 0 5.0 - - - user.a=1
        /dev/null 0 20666 1 0 0 259 5.0 - - -
        /dev/pipe 0 10600 1 0 0 0 5.0 - - -
        /empty 0 100644 1 0 0 0 6.0 - - -
        /inline 512 100644 1 0 0 0 8.0 - \(String(repeating: "i", count: 512)) - trusted.overlay.whiteout= user.overlay.whiteout=
        /link 4097 @100644 0 0 0 0 0.0 /backed - -
        /sparse 1073741824 100644 1 0 0 0 7.0 - - -
        /symlink 1024 120777 1 0 0 0 9.0 \(String(repeating: "t", count: 1024)) - -
        /wh 0 20000 1 0 0 0 2.0 - - -

        """

    static let whiteouts = ["/aa", "/dev/gone", "/wh"]
    /// A chunked file without a redirect: the kernel cannot stat it (EIO), FUSE can.
    static let sparse = ["/sparse"]
    static let format2 = ["--min-version=2", "--max-version=2"]

    struct Sample {
        let work: TemporaryDirectory
        let dumpfile: String
        let image: String
        let objects: String
        let mountpoint: String
    }

    /// The sample dumpfile, its format 2 image by our mkcomposefs, and objects for its backed files.
    static func makeSample() throws -> Sample {
        let work = try TemporaryDirectory()
        let sample = Sample(
            work: work, dumpfile: work.url.appendingPathComponent("sample.dump").path,
            image: work.url.appendingPathComponent("sample.cfs").path, objects: work.url.appendingPathComponent("objects").path,
            mountpoint: work.url.appendingPathComponent("mnt").path)
        try sampleDump.write(toFile: sample.dumpfile, atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: sample.mountpoint, withIntermediateDirectories: true)
        let result = try runTool("mkcomposefs", format2 + ["--from-file", sample.dumpfile, sample.image])
        #expect(result.status == 0, "\(result.stderr)")
        for (object, size) in [(backed, 4097), (byPath, 10)] {
            let path = sample.objects + "/" + object.prefix(2) + "/" + object.dropFirst(2)
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }).write(to: URL(fileURLWithPath: path))
        }
        return sample
    }

    static func expectFsck(_ image: String, _ label: String) throws {
        guard let fsck = findExecutable("fsck.erofs") else {
            #expect(!SharedAssets.isCI, "fsck.erofs (erofs-utils) is missing")
            print("skipping fsck.erofs of \(label): not installed")
            return
        }
        let result = try run(fsck, [image])
        #expect(result.status == 0, "fsck.erofs rejects \(label): \(result.stdout)\(result.stderr)")
    }

    static func bytes(_ path: String) -> [UInt8]? { FileManager.default.contents(atPath: path).map { [UInt8]($0) } }

    @Test func mkcomposefsWritesFormat2FromADumpfile() throws {
        let sample = try Self.makeSample()
        let image = try #require(Self.bytes(sample.image))
        #expect(try imageVersion(sample.image) == 2)
        try Self.expectFsck(sample.image, "the sample")

        // --print-digest prints the image's fs-verity digest; --print-digest-only the same; stdin too.
        let again = sample.work.url.appendingPathComponent("again.cfs").path
        let printed = try runTool("mkcomposefs", Self.format2 + ["--print-digest", "--from-file", "-", again], stdin: sample.dumpfile)
        #expect(printed.status == 0, "\(printed.stderr)")
        #expect(Self.bytes(again) == image)
        let digest = printed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(digest == FsVerity.digest(of: image).hex)
        let only = try runTool("mkcomposefs", Self.format2 + ["--print-digest-only", "--from-file", sample.dumpfile])
        #expect(only.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == digest)

        if SharedAssets.runRSReferenceTests {
            let oracle = try SharedAssets.rsTool("cfs-oracle")
            let reference = sample.work.url.appendingPathComponent("rs.cfs").path
            #expect(try run(oracle, ["mkfs", "--version", "2", sample.dumpfile, reference]).status == 0)
            #expect(Self.bytes(reference) == image, "differs from composefs-rs")
            let rsDigest = try run(oracle, ["image-digest", "--version", "2", sample.dumpfile]).stdout
            #expect(rsDigest.trimmingCharacters(in: .whitespacesAndNewlines) == digest)
        }

        // A maximum of 2 with a lower minimum gives the C formats: 1 here, for the whiteouts.
        let auto = sample.work.url.appendingPathComponent("auto.cfs").path
        #expect(try runTool("mkcomposefs", ["--max-version=2", "--from-file", sample.dumpfile, auto]).status == 0)
        #expect(try imageVersion(auto) == 1)
        let unknown = try runTool("mkcomposefs", ["--min-version=3", "--from-file", sample.dumpfile, auto])
        #expect(unknown.status == 1 && unknown.stderr.contains("unsupported format version 3"), "\(unknown.stderr)")
    }

    @Test func mkcomposefsRefusesWhatFormat2CannotHold() throws {
        let work = try TemporaryDirectory()
        let image = work.url.appendingPathComponent("out.cfs").path
        for (line, message) in [
            ("/f 513 100644 1 0 0 0 0.0 - \(String(repeating: "x", count: 513)) -", "/f: inline content of 513 bytes is longer than format 2 allows (512)"),
            ("/l 1025 120777 1 0 0 0 0.0 \(String(repeating: "x", count: 1025)) - -", "/l: symlink target of 1025 bytes is longer than format 2 allows (1024)"),
            ("/b 100 100644 1 0 0 0 0.0 objects/file - -", "/b: backing file 'objects/file' does not end in an object path"),
        ] {
            let dumpfile = work.url.appendingPathComponent("bad.dump").path
            try "/ 0 40755 2 0 0 0 0.0 - - -\n\(line)\n".write(toFile: dumpfile, atomically: true, encoding: .utf8)
            let result = try runTool("mkcomposefs", Self.format2 + ["--from-file", dumpfile, image])
            #expect(result.status == 1 && result.stderr.contains(message), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: image))
            // Formats 0 and 1 hold all of these.
            #expect(try runTool("mkcomposefs", ["--from-file", dumpfile, image]).status == 0)
            try FileManager.default.removeItem(atPath: image)
        }
    }

    /// From a directory: the tree of the format 1 image (dumped, and written by composefs-rs
    /// in format 2) is the tree of the format 2 image, with the same objects.
    @Test func mkcomposefsWritesFormat2FromADirectory() throws {
        let work = try TemporaryDirectory()
        let tree = work.url.appendingPathComponent("tree")
        _ = try MkcomposefsTests.makeTree(at: tree)
        let v1 = work.url.appendingPathComponent("v1.cfs").path
        let v2 = work.url.appendingPathComponent("v2.cfs").path
        let objects1 = work.url.appendingPathComponent("objects1").path
        let objects2 = work.url.appendingPathComponent("objects2").path
        #expect(try runTool("mkcomposefs", ["--digest-store=\(objects1)", tree.path, v1]).status == 0)
        let result = try runTool("mkcomposefs", Self.format2 + ["--digest-store=\(objects2)", "--print-digest", tree.path, v2])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try imageVersion(v2) == 2)
        let stored = try listFiles(objects2)
        #expect(try listFiles(objects1) == stored && !stored.isEmpty)
        let only = try runTool("mkcomposefs", Self.format2 + ["--print-digest-only", tree.path])
        #expect(only.stdout == result.stdout && only.stdout.count == 65)
        try Self.expectFsck(v2, "the image of a directory")

        let dumpfile = work.url.appendingPathComponent("v1.dump").path
        try Data(try runTool("composefs-info", ["dump", v1]).stdout.utf8).write(to: URL(fileURLWithPath: dumpfile))
        let rebuilt = work.url.appendingPathComponent("rebuilt.cfs").path
        #expect(try runTool("mkcomposefs", Self.format2 + ["--from-file", dumpfile, rebuilt]).status == 0)
        #expect(Self.bytes(rebuilt) == Self.bytes(v2))
        if SharedAssets.runRSReferenceTests {
            let reference = work.url.appendingPathComponent("rs.cfs").path
            #expect(try run(try SharedAssets.rsTool("cfs-oracle"), ["mkfs", "--version", "2", dumpfile, reference]).status == 0)
            #expect(Self.bytes(reference) == Self.bytes(v2), "differs from composefs-rs")
        }
    }

    /// composefs-info and composefs-dump on a format 2 image (composefs-rs's when it is there).
    ///
    /// Where `cfs-oracle dump` (composefs-rs's reader) differs, ours keeps what the image holds:
    /// composefs-rs drops root entries with two-hex-digit names that are whiteouts (taking them
    /// for the stubs of formats 0 and 1, which format 2 does not have: `/aa` is lost) and the
    /// user's `trusted.overlay.opaque`/`…whiteout` and `user.overlay.*` xattrs; it also prints
    /// directories with size 0, sorts xattrs, and gives a file named by its object path alone
    /// that object's id as digest.
    @Test func infoAndDumpReadFormat2() throws {
        let sample = try Self.makeSample()
        var image = sample.image
        if SharedAssets.runRSReferenceTests {
            image = sample.work.url.appendingPathComponent("rs.cfs").path
            #expect(try run(try SharedAssets.rsTool("cfs-oracle"), ["mkfs", "--version", "2", sample.dumpfile, image]).status == 0)
            let rsDump = try run(try SharedAssets.rsTool("cfs-oracle"), ["dump", image]).stdout
            #expect(!rsDump.contains("\n/aa ") && rsDump.contains("\n/wh "))
        }
        let dump = try runTool("composefs-info", ["dump", image])
        #expect(dump.status == 0, "\(dump.stderr)")
        let lines = dump.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("/ ") == true && lines.first?.contains(" 1700000000.0 - - - ") == true)
        #expect(lines.first?.contains("trusted.overlay.opaque=y") == true)
        for whiteout in Self.whiteouts {
            #expect(lines.contains { $0.hasPrefix(whiteout + " 0 20000 1 ") }, "\(whiteout) is missing")
        }
        #expect(lines.contains { $0.hasPrefix("/inline 512 100644 1 ") && $0.hasSuffix(" - trusted.overlay.whiteout= user.overlay.whiteout=") })
        #expect(lines.contains("/backed 4097 100644 2 1000 1000 0 3.0 ab/\(Self.backed.dropFirst(2)) - \(Self.backed) user.a=1"))
        #expect(lines.contains("/link 4097 @100644 2 1000 1000 0 3.0 /backed - \(Self.backed) user.a=1"))
        #expect(lines.contains("/by-path 10 100644 1 0 0 0 4.0 cd/\(Self.byPath.dropFirst(2)) - - user.a=1"))
        #expect(lines.contains("/sparse 1073741824 100644 1 0 0 0 7.0 - - -"))

        // composefs-dump prints the same, and rewrites the image as it is.
        #expect(try runTool("composefs-dump", [image]).stdout == dump.stdout)
        let rewritten = sample.work.url.appendingPathComponent("rewritten.cfs").path
        #expect(try runTool("composefs-dump", [image, rewritten]).status == 0)
        #expect(Self.bytes(rewritten) == Self.bytes(sample.image))
        // The dump makes the image again.
        let dumped = sample.work.url.appendingPathComponent("dumped.dump").path
        try Data(dump.stdout.utf8).write(to: URL(fileURLWithPath: dumped))
        let again = sample.work.url.appendingPathComponent("again.cfs").path
        #expect(try runTool("mkcomposefs", Self.format2 + ["--from-file", dumped, again]).status == 0)
        #expect(Self.bytes(again) == Self.bytes(sample.image))

        let ls = try runTool("composefs-info", ["ls", image]).stdout
        #expect(ls.contains("/backed\t@ ab/\(Self.backed.dropFirst(2))\n") && ls.contains("/dev/\t\n") && ls.contains("/aa\n"))
        let objects = try runTool("composefs-info", ["objects", image]).stdout.split(separator: "\n").map(String.init)
        #expect(objects == ["ab/" + Self.backed.dropFirst(2), "cd/" + Self.byPath.dropFirst(2)])
        let missing = try runTool("composefs-info", ["--basedir=\(sample.objects)", "missing-objects", image])
        #expect(missing.status == 0 && missing.stdout.isEmpty)
        try FileManager.default.removeItem(atPath: sample.objects + "/cd")
        #expect(try runTool("composefs-info", ["--basedir=\(sample.objects)", "missing-objects", image]).stdout == objects[1] + "\n")
        let filtered = try runTool("composefs-info", ["--filter=dev", "dump", image]).stdout.split(separator: "\n")
        #expect(filtered.count == 5)
    }

    // MARK: Mounts

    /// What a mount of the sample shows, but for whiteouts and the sparse file: seconds only,
    /// no `lustre.` xattrs (the kernel does not list them) and no ACLs (format 2 never sets
    /// the header flag that keeps them).
    static func expectedMount(of dumpfile: String) throws -> TreeSnapshot {
        let tree = try DumpfileParser.parse(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dumpfile))))
        var expected = TreeSnapshot(tree: tree)
        for path in whiteouts + sparse { expected.entries[path] = nil }
        for (path, var entry) in expected.entries {
            entry.mtimeNanoseconds = 0
            entry.xattrs = entry.xattrs.filter { !$0.key.hasPrefix("lustre.") && !$0.key.hasPrefix("system.posix_acl") }
            expected.entries[path] = entry
        }
        return expected
    }

    static var snapshotOptions: TreeSnapshot.Options {
        var options = TreeSnapshot.Options()
        options.readContents = false
        options.excluding = Set(whiteouts + sparse)
        return options
    }

    /// How overlayfs shows format 2's whiteouts: never found by lookup; left out of the
    /// root's listing (the root merges the image with the object stores), listed in other
    /// directories (single-layer directories are listed straight from EROFS).
    static func expectWhiteouts(at mountpoint: String, _ label: String) throws {
        for path in whiteouts {
            let parent = (path as NSString).deletingLastPathComponent
            let listed = try FileManager.default.contentsOfDirectory(atPath: mountpoint + parent)
            #expect(listed.contains((path as NSString).lastPathComponent) == (parent != "/"), "\(label): \(path) listing")
            var st = stat()
            #expect(lstat(mountpoint + path, &st) != 0 && errno == ENOENT, "\(label): \(path) found")
        }
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func kernelMountShowsTheDumpfile() throws {
        let sample = try Self.makeSample()
        let result = try runTool("mount.composefs", ["-o", "basedir=\(sample.objects)", sample.image, sample.mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountAndCheck(sample.mountpoint) }
        let mounted = try TreeSnapshot.capture(root: sample.mountpoint, options: Self.snapshotOptions)
        let differences = try Self.expectedMount(of: sample.dumpfile).differences(from: mounted)
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
        try Self.expectWhiteouts(at: sample.mountpoint, "kernel")
        for path in Self.sparse {
            var st = stat()
            #expect(lstat(sample.mountpoint + path, &st) != 0 && errno == EIO, "\(path)")
        }
        // Hard links share an inode, and contents come from the objects.
        var a = stat()
        var b = stat()
        #expect(lstat(sample.mountpoint + "/backed", &a) == 0 && lstat(sample.mountpoint + "/link", &b) == 0)
        #expect(a.st_ino == b.st_ino && a.st_nlink == 2)
        #expect(Self.bytes(sample.mountpoint + "/link") == Self.bytes(sample.objects + "/ab/" + Self.backed.dropFirst(2)))
        #expect(Self.bytes(sample.mountpoint + "/inline") == Array(repeating: UInt8(ascii: "i"), count: 512))
    }

    /// The image of a directory, mounted: the directory, in whole seconds.
    @Test(.enabled(if: MountEnvironment.canMount)) func kernelMountOfADirectoryImage() throws {
        let work = try TemporaryDirectory()
        let source = work.url.appendingPathComponent("tree").path
        try MountTests.makeRootTree(at: URL(fileURLWithPath: source))
        let image = work.url.appendingPathComponent("tree.cfs").path
        let objects = work.url.appendingPathComponent("objects").path
        let mountpoint = work.url.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let built = try runTool("mkcomposefs", Self.format2 + ["--digest-store=\(objects)", source, image])
        #expect(built.status == 0, "\(built.stderr)")
        let result = try runTool("mount.composefs", ["-o", "basedir=\(objects)", image, mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountAndCheck(mountpoint) }
        // Its whiteout, /dir/sub/gone, is listed but not there.
        var options = TreeSnapshot.Options()
        options.excluding = ["/dir/sub/gone"]
        var expected = try TreeSnapshot.capture(root: source, options: options)
        for (path, var entry) in expected.entries {
            entry.mtimeNanoseconds = 0
            expected.entries[path] = entry
        }
        let mounted = try TreeSnapshot.capture(root: mountpoint, options: options)
        let differences = MountTests.withoutHardlinks(expected).differences(from: MountTests.withoutHardlinks(mounted))
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: mountpoint + "/dir/sub").contains("gone"))
        var st = stat()
        #expect(lstat(mountpoint + "/dir/sub/gone", &st) != 0 && errno == ENOENT)
    }

    /// composefs-fuse shows a format 2 image as the kernel does (but for the xattrs only
    /// root sees, and the sparse file, which FUSE can stat): the same entries, attributes and
    /// user xattrs, whiteouts listed in the same directories and found in none.
    @Test(.enabled(if: FuseEnvironment.canMount)) func fuseShowsWhatTheKernelShows() throws {
        let sample = try Self.makeSample()
        var options = Self.snapshotOptions
        options.includeXattr = { $0.hasPrefix("user.") }
        var listings: [String: [String]] = [:]
        func list(_ mountpoint: String) throws -> [String: [String]] {
            var result: [String: [String]] = [:]
            for directory in ["/", "/dev"] {
                result[directory] = try FileManager.default.contentsOfDirectory(atPath: mountpoint + directory).sorted()
            }
            return result
        }
        var expected = try Self.expectedMount(of: sample.dumpfile).userXattrsOnly()
        if MountEnvironment.canMount {
            let kernel = try runTool("mount.composefs", ["-o", "basedir=\(sample.objects)", sample.image, sample.mountpoint])
            #expect(kernel.status == 0, "\(kernel.stderr)")
            if kernel.status == 0 {
                defer { unmountAndCheck(sample.mountpoint) }
                expected = try TreeSnapshot.capture(root: sample.mountpoint, options: options)
                listings = try list(sample.mountpoint)
            }
        }
        let result = try mountFuse(image: sample.image, basedir: sample.objects, at: sample.mountpoint)
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountFuse(sample.mountpoint) }
        let mounted = try TreeSnapshot.capture(root: sample.mountpoint, options: options)
        let differences = expected.differences(from: mounted)
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
        try Self.expectWhiteouts(at: sample.mountpoint, "FUSE")
        if !listings.isEmpty { #expect(try list(sample.mountpoint) == listings) }
        // readdir (not plus) lists the whiteout too, with its type.
        let dev = try #require(opendir(sample.mountpoint + "/dev"))
        defer { closedir(dev) }
        var types: [String: UInt8] = [:]
        while let entry = readdir(dev) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            types[name] = entry.pointee.d_type
        }
        #expect(types["gone"] == UInt8(DT_CHR))
        var st = stat()
        #expect(lstat(sample.mountpoint + "/sparse", &st) == 0 && st.st_size == 1 << 30)
        #expect(Self.bytes(sample.mountpoint + "/link") == Self.bytes(sample.objects + "/ab/" + Self.backed.dropFirst(2)))
    }
}
