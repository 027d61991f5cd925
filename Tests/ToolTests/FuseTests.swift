// composefs-fuse end to end: images built by our mkcomposefs from random trees and from
// the reference vectors, mounted through FUSE, must show the tree they were built from
// (as an unprivileged overlayfs mount would: user.* xattrs only), and exactly what the
// reference composefs-fuse (../shared/reference) shows for the same image.

import CComposeFSSys
import ComposeFS
import Crypto
import Dumpfile
import Foundation
import FsVerity
import Testing
import TestSupport

enum FuseEnvironment {
    /// Why FUSE mounts cannot run here, or nil when they can.
    static let unavailableReason: String? = {
        guard access("/dev/fuse", R_OK | W_OK) == 0 else { return "/dev/fuse is not available" }
        if geteuid() != 0 && findExecutable("fusermount3") == nil { return "not root and no fusermount3" }
        // A real mount of a one-file image, as containers may refuse mounts even to root.
        do {
            let work = try TemporaryDirectory()
            let tree = work.url.appendingPathComponent("tree").path
            let mountpoint = work.url.appendingPathComponent("mnt").path
            let image = work.url.appendingPathComponent("probe.cfs").path
            try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: tree + "/file", contents: Data("probe".utf8))
            guard try runTool("mkcomposefs", [tree, image]).status == 0 else { return "mkcomposefs failed" }
            let result = try mountFuse(image: image, basedir: nil, at: mountpoint)
            guard result.status == 0 else { return "composefs-fuse cannot mount: \(result.stderr)" }
            defer { unmountFuse(mountpoint) }
            guard (try? String(contentsOfFile: mountpoint + "/file", encoding: .utf8)) == "probe" else {
                return "the probe mount does not work"
            }
        } catch {
            return "probe failed: \(error)"
        }
        return nil
    }()

    static var canMount: Bool {
        if let unavailableReason { print("skipping FUSE test: \(unavailableReason)") }
        return unavailableReason == nil
    }

}

/// The composefs-fuse servers the tests started, by mountpoint.
///
/// Servers run in the foreground (`-f`): a daemonized one would keep Foundation's
/// child-tracking socket open, and Process would wait for the daemon instead of the
/// parent. The daemon mode itself is exercised in `commandLine`.
nonisolated(unsafe) private var fuseServers: [String: Process] = [:]
private let fuseServersLock = NSLock()

/// Mounts `image` with `-o source=…,basedir=…` (the reference syntax) using our binary or
/// `tool`, and returns once it is mounted (status 0) or the server gave up (its status
/// and error output).
func mountFuse(
    image: String, basedir: String?, at mountpoint: String, options: [String] = [], tool: String? = nil,
    foreground: Bool = true
) throws -> ProcessResult {
    var list = ["source=\(image)"]
    if let basedir { list.append("basedir=\(basedir)") }
    list += options
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool ?? productsDirectory().appendingPathComponent("composefs-fuse").path)
    process.arguments = (foreground ? ["-f"] : []) + ["-o", list.joined(separator: ","), mountpoint]
    let errors = FileManager.default.temporaryDirectory.appendingPathComponent("cfs-fuse-\(UUID().uuidString).err").path
    _ = FileManager.default.createFile(atPath: errors, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: errors) }
    process.standardError = FileHandle(forWritingAtPath: errors)
    process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    try process.run()
    for _ in 0..<1000 {
        if isMounted(mountpoint) {
            fuseServersLock.withLock { fuseServers[mountpoint] = process }
            return ProcessResult(status: 0, stdout: "", stderr: "")
        }
        // A daemonizing server's parent exits once mounted; a foreground one only on failure.
        if !process.isRunning && (foreground || process.terminationStatus != 0) { break }
        usleep(10_000)
    }
    if process.isRunning {
        process.terminate()
        process.waitUntilExit()
        return ProcessResult(status: -1, stdout: "", stderr: "not mounted after 10 s")
    }
    let stderr = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
    return ProcessResult(status: process.terminationStatus, stdout: "", stderr: stderr)
}

/// Unmounts (umount(2) as root, fusermount3 otherwise), then waits for the server to exit.
func unmountFuse(_ mountpoint: String) {
    var done = false
    for _ in 0..<100 where !done {
        if geteuid() == 0 {
            done = cfs_umount(mountpoint, 0) == 0
        } else {
            done = (try? run(findExecutable("fusermount3") ?? "/bin/fusermount3", ["-u", mountpoint]).status) == 0
        }
        if !done { usleep(20_000) }
    }
    if !done {
        Issue.record("could not unmount \(mountpoint)")
        _ = cfs_umount(mountpoint, 1)
    }
    if let process = fuseServersLock.withLock({ fuseServers.removeValue(forKey: mountpoint) }) {
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "server for \(mountpoint) exited with \(process.terminationStatus)")
    }
}

func isMounted(_ mountpoint: String) -> Bool {
    let mountinfo = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    return mountinfo.contains(" \(mountpoint) ")
}

extension TreeSnapshot {
    /// Only the user.* xattrs: what composefs-fuse shows (as the reference does).
    func userXattrsOnly() -> TreeSnapshot {
        var result = self
        for (key, var entry) in entries {
            entry.xattrs = entry.xattrs.filter { $0.key.hasPrefix("user.") }
            result.entries[key] = entry
        }
        return result
    }
}

/// Everything a client can observe of a mounted tree, as text lines, in readdir order:
/// directory entries with d_ino/d_type and telldir cookies, every lstat field but the
/// device, xattr lists in order with values, some xattr lookups' errors, link targets,
/// and the digest (or open/read error) of each regular file.
func observe(_ root: String, contents: Bool = true) -> [String] {
    var lines: [String] = []
    func errorName(_ code: Int32) -> String { "E\(code)" }
    func describe(_ relative: String) {
        let path = root + relative
        var st = stat()
        guard lstat(path, &st) == 0 else {
            lines.append("\(relative) lstat \(errorName(errno))")
            return
        }
        lines.append(
            "\(relative) ino \(st.st_ino) mode \(String(st.st_mode, radix: 8)) nlink \(st.st_nlink) \(st.st_uid):\(st.st_gid) "
                + "rdev \(st.st_rdev) size \(st.st_size) blocks \(st.st_blocks) blksize \(st.st_blksize) "
                + "a \(st.st_atim.tv_sec).\(st.st_atim.tv_nsec) m \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) "
                + "c \(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)")
        var names = [CChar](repeating: 0, count: 65536)
        let listed = cfs_llistxattr(path, &names, names.count)
        if listed < 0 {
            lines.append("  listxattr \(errorName(errno))")
        } else {
            for name in names[..<listed].split(separator: 0) {
                let key = String(decoding: name.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                var value = [UInt8](repeating: 0, count: 65536)
                let size = cfs_lgetxattr(path, key, &value, value.count)
                lines.append("  xattr \(key) = \(size < 0 ? errorName(errno) : value[..<size].map { String($0, radix: 16) }.joined(separator: " "))")
            }
        }
        for key in ["user.missing", "trusted.overlay.redirect", "trusted.overlay.metacopy", "system.posix_acl_access", "security.selinux"] {
            var value = [UInt8](repeating: 0, count: 1024)
            let size = cfs_lgetxattr(path, key, &value, value.count)
            lines.append("  probe \(key): \(size < 0 ? errorName(errno) : "\(size) bytes")")
        }
        switch st.st_mode & S_IFMT {
        case S_IFLNK:
            var target = [CChar](repeating: 0, count: 8192)
            let n = readlink(path, &target, target.count)
            lines.append("  -> \(n < 0 ? errorName(errno) : String(decoding: target[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self))")
        case S_IFREG where contents:
            lines.append("  content \(digestOrError(path))")
        case S_IFDIR:
            guard let dir = opendir(path) else {
                lines.append("  opendir \(errorName(errno))")
                return
            }
            var children: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                lines.append("  entry \(name) ino \(entry.pointee.d_ino) type \(entry.pointee.d_type) cookie \(telldir(dir))")
                if name != "." && name != ".." { children.append(name) }
            }
            closedir(dir)
            for child in children { describe(relative == "/" ? "/" + child : relative + "/" + child) }
        default:
            break
        }
    }
    describe("/")
    return lines
}

/// The SHA-256 of a file read in odd-sized pieces, or the errno of the failing call.
func digestOrError(_ path: String) -> String {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return "open E\(errno)" }
    defer { close(fd) }
    var hasher = SHA256()
    var buffer = [UInt8](repeating: 0, count: 100_000)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return "read E\(errno)" }
        if n == 0 { break }
        buffer.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[..<n])) }
    }
    return hasher.finalize().map { String(format: "%02x", $0) }.joined()
}

/// lseek whences Swift's Glibc module leaves out (they need _GNU_SOURCE).
enum Linux {
    static let SEEK_DATA: Int32 = 3
    static let SEEK_HOLE: Int32 = 4
}

@Suite(.serialized) struct FuseTests {
    /// Seeds for the random round trip; FUSE_SEEDS=a,b,c or FUSE_SEED_COUNT=n overrides.
    static var seeds: [UInt64] {
        let environment = ProcessInfo.processInfo.environment
        if let list = environment["FUSE_SEEDS"] { return list.split(separator: ",").compactMap { UInt64($0) } }
        let count = environment["FUSE_SEED_COUNT"].flatMap { Int($0) } ?? 24
        return (0..<UInt64(count)).map { 0xC0FF_EE00 + $0 }
    }

    /// Mounts are compared on their user.* xattrs (POSIX ACLs, shown for images that have
    /// them, are checked in `posixACLs`).
    static var mountOptions: TreeSnapshot.Options {
        var options = TreeSnapshot.Options()
        options.includeXattr = { $0.hasPrefix("user.") }
        return options
    }

    struct Built {
        let work: TemporaryDirectory
        let source: String
        let image: String
        let objects: String
        let mountpoint: String
    }

    static func build(seed: UInt64, options: RandomTree.Options = RandomTree.Options()) throws -> (Built, RandomTree.Summary) {
        let work = try TemporaryDirectory()
        let source = work.url.appendingPathComponent("tree").path
        let summary = try RandomTree.generate(at: source, seed: seed, options: options)
        let built = Built(
            work: work, source: source, image: work.url.appendingPathComponent("tree.cfs").path,
            objects: work.url.appendingPathComponent("objects").path,
            mountpoint: work.url.appendingPathComponent("mnt").path)
        try FileManager.default.createDirectory(atPath: built.mountpoint, withIntermediateDirectories: true)
        let result = try runTool("mkcomposefs", ["--digest-store=\(built.objects)", source, built.image])
        guard result.status == 0 else { throw SnapshotError("mkcomposefs \(summary): \(result.stderr)") }
        return (built, summary)
    }

    /// What the FUSE mount of an image built from `source` must show.
    static func expected(from source: String, image: String) throws -> TreeSnapshot {
        MountTests.withoutHardlinks(try TreeSnapshot.capture(root: source).asMounted(version: try imageVersion(image)))
            .userXattrsOnly()
    }

    static func directoryLinkCounts(_ root: String) throws -> [String: UInt] {
        var counts: [String: UInt] = [:]
        var pending = [""]
        while let relative = pending.popLast() {
            var st = stat()
            guard lstat(root + relative, &st) == 0 else { throw SnapshotError("lstat \(root + relative): \(errnoText())") }
            if st.st_mode & S_IFMT == S_IFDIR {
                counts[relative.isEmpty ? "/" : relative] = UInt(st.st_nlink)
                for name in try FileManager.default.contentsOfDirectory(atPath: root + relative) {
                    pending.append(relative + "/" + name)
                }
            }
        }
        return counts
    }

    /// The reference's test-random-fuse, with our tools: random tree → image → FUSE mount →
    /// same tree; then an image of the mount, mounted again, shows the same again.
    @Test(.enabled(if: FuseEnvironment.canMount)) func randomTreesRoundTrip() throws {
        let started = Date()
        for (n, seed) in Self.seeds.enumerated() {
            let (built, summary) = try Self.build(seed: seed)
            let expected = try Self.expected(from: built.source, image: built.image)
            // Every other seed with open requests, the reference's way of opening files.
            let modes = n % 2 == 1 ? ["open_requests"] : []
            let result = try mountFuse(image: built.image, basedir: built.objects, at: built.mountpoint, options: modes)
            #expect(result.status == 0, "\(summary): \(result.stderr)")
            guard result.status == 0 else { continue }
            var mounted: TreeSnapshot
            var links: [String: UInt]
            do {
                defer { unmountFuse(built.mountpoint) }
                mounted = try TreeSnapshot.capture(root: built.mountpoint, options: Self.mountOptions)
                links = try Self.directoryLinkCounts(built.mountpoint)
                var root = stat()
                #expect(lstat(built.mountpoint, &root) == 0 && root.st_ino == 1, "root inode \(root.st_ino)")
            }
            let differences = expected.differences(from: mounted)
            #expect(differences.isEmpty, "\(summary):\n\(differences.prefix(20).joined(separator: "\n"))")
            if differences.isEmpty { print("FUSE round trip ok: \(summary)") }
            #expect(links == (try Self.directoryLinkCounts(built.source)), "\(summary): directory link counts differ")

            // Every few seeds, the reference's second half: image the mount, mount that.
            guard n % 4 == 0 else { continue }
            let again = built.work.url.appendingPathComponent("again.cfs").path
            let remount = try mountFuse(image: built.image, basedir: built.objects, at: built.mountpoint)
            #expect(remount.status == 0, "\(remount.stderr)")
            guard remount.status == 0 else { continue }
            let imaged = try runTool("mkcomposefs", ["--digest-store=\(built.objects)", built.mountpoint, again])
            unmountFuse(built.mountpoint)
            #expect(imaged.status == 0, "\(summary): mkcomposefs of the mount: \(imaged.stderr)")
            let second = try mountFuse(image: again, basedir: built.objects, at: built.mountpoint)
            #expect(second.status == 0, "\(second.stderr)")
            guard second.status == 0 else { continue }
            defer { unmountFuse(built.mountpoint) }
            let secondSnapshot = try TreeSnapshot.capture(root: built.mountpoint, options: Self.mountOptions)
            let secondDifferences = mounted.differences(from: secondSnapshot)
            #expect(secondDifferences.isEmpty, "\(summary) (image of the mount):\n\(secondDifferences.prefix(20).joined(separator: "\n"))")
        }
        print("FUSE round trip: \(Self.seeds.count) seeds in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    }

    /// The fixed tree of the kernel-mount tests, served through FUSE.
    @Test(.enabled(if: FuseEnvironment.canMount && geteuid() == 0)) func kernelMountTestTree() throws {
        let built = try MountTests.buildRootTree()
        let result = try mountFuse(image: built.image, basedir: built.objects, at: built.mountpoint)
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountFuse(built.mountpoint) }
        let expected = try Self.expected(from: built.source, image: built.image)
        let mounted = try TreeSnapshot.capture(root: built.mountpoint, options: Self.mountOptions)
        let differences = expected.differences(from: mounted)
        #expect(differences.isEmpty, "\(differences.joined(separator: "\n"))")
    }

    /// The same image through FUSE and through a kernel mount (mount.composefs): the same
    /// tree, but for the xattrs only the kernel shows to root (trusted.*).
    @Test(.enabled(if: FuseEnvironment.canMount && MountEnvironment.canMount)) func sameTreeAsKernelMount() throws {
        for seed in Self.seeds.prefix(4) {
            let (built, summary) = try Self.build(seed: seed)
            let kernel = try runTool("mount.composefs", ["-o", "basedir=\(built.objects)", built.image, built.mountpoint])
            #expect(kernel.status == 0, "\(kernel.stderr)")
            guard kernel.status == 0 else { continue }
            let kernelView: TreeSnapshot
            do {
                defer { unmountAndCheck(built.mountpoint) }
                kernelView = try TreeSnapshot.capture(root: built.mountpoint, options: Self.mountOptions)
            }
            let result = try mountFuse(image: built.image, basedir: built.objects, at: built.mountpoint)
            #expect(result.status == 0, "\(result.stderr)")
            guard result.status == 0 else { continue }
            defer { unmountFuse(built.mountpoint) }
            let fuseView = try TreeSnapshot.capture(root: built.mountpoint, options: Self.mountOptions)
            let differences = kernelView.differences(from: fuseView)
            #expect(differences.isEmpty, "\(summary):\n\(differences.prefix(20).joined(separator: "\n"))")
        }
    }

    /// Side by side with the reference composefs-fuse on the same images: identical
    /// inode numbers, link counts, attributes, listings, cookies, xattrs and contents.
    @Test(.enabled(if: FuseEnvironment.canMount), .enabled(if: SharedAssets.runCReferenceTests, SharedAssets.cReferenceMissing))
    func identicalToReferenceFuse() throws {
        let reference = try SharedAssets.cTool("composefs-fuse")
        var images: [(label: String, image: String, objects: String?, work: TemporaryDirectory)] = []
        for seed in Self.seeds.prefix(3) {
            let (built, summary) = try Self.build(seed: seed)
            images.append((summary.description, built.image, built.objects, built.work))
        }
        if SharedAssets.runVectorTests {
            let assets = try SharedAssets.vectors()
            for name in ["special.dump", "special_v1.dump", "longlink.dump", "bigfile-xattr.dump", "config-with-hard-link.dump.gz"] {
                let work = try TemporaryDirectory()
                let image = work.url.appendingPathComponent("vector.cfs").path
                var dumpfile = assets + "/" + name
                if name.hasSuffix(".gz") {
                    let plain = work.url.appendingPathComponent("vector.dump").path
                    let result = try run("/bin/sh", ["-c", "gzip -dc '\(dumpfile)' > '\(plain)'"])
                    #expect(result.status == 0)
                    dumpfile = plain
                }
                let result = try runTool("mkcomposefs", ["--from-file", dumpfile, image])
                #expect(result.status == 0, "\(name): \(result.stderr)")
                images.append((name, image, nil, work))
            }
        }
        for entry in images {
            let mountpoint = entry.work.url.appendingPathComponent("cmp-mnt").path
            try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
            // Without objects the reference cannot open a backed file (basedir is required: use an empty one).
            let objects = entry.objects ?? entry.work.url.appendingPathComponent("no-objects").path
            try FileManager.default.createDirectory(atPath: objects, withIntermediateDirectories: true)
            var views: [[String]] = []
            for (tool, options) in [(reference, []), (nil, []), (nil, ["open_requests"])] {
                let result = try mountFuse(image: entry.image, basedir: objects, at: mountpoint, options: options, tool: tool)
                #expect(result.status == 0, "\(entry.label) \(tool ?? "ours") \(options): \(result.stderr)")
                guard result.status == 0 else { break }
                views.append(observe(mountpoint))
                unmountFuse(mountpoint)
            }
            guard views.count == 3 else { continue }
            let theirs = views[0]
            for ours in views[1...] {
                #expect(theirs.count == ours.count, "\(entry.label): \(theirs.count) lines from the reference, \(ours.count) from ours")
                #expect(ours.count > 10, "\(entry.label): only \(ours.count) lines")
                let differing = zip(theirs, ours).filter { $0 != $1 && !Self.knownReferenceDifference($0, $1) }
                    .prefix(10).map { "ref:  \($0.prefix(300))\nours: \($1.prefix(300))" }
                #expect(differing.isEmpty, "\(entry.label):\n\(differing.joined(separator: "\n"))")
            }
        }
    }

    /// Where we differ from the reference composefs-fuse on purpose: it cannot read symlink
    /// targets stored in a block rather than inline (EINVAL); and files open without a
    /// request here (Linux 5.1+), so a backed file without its object fails its reads with
    /// EIO where the reference fails the open (ENOENT) or, without a redirect, its reads
    /// (ENXIO).
    static func knownReferenceDifference(_ theirs: String, _ ours: String) -> Bool {
        if theirs == "  -> E\(EINVAL)" && ours.hasPrefix("  -> ") { return true }
        if theirs == "  content open E\(ENOENT)" && ours == "  content read E\(EIO)" { return true }
        if theirs == "  content read E\(ENXIO)" && (ours == "  content read E\(EIO)" || ours == "  content open E\(EIO)") {
            return true
        }
        return false
    }

    /// Every reference vector, mounted without its objects: the metadata (hard links
    /// included: images from dumpfiles keep them) must be the dumpfile's.
    @Test(.enabled(if: FuseEnvironment.canMount), .enabled(if: SharedAssets.runVectorTests, SharedAssets.vectorsMissing))
    func vectorsShowTheirDumpfiles() throws {
        let assets = try SharedAssets.vectors()
        let work = try TemporaryDirectory()
        let image = work.url.appendingPathComponent("vector.cfs").path
        let mountpoint = work.url.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        var checked = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: assets).sorted()
        where (name.hasSuffix(".dump") || name.hasSuffix(".dump.gz")) && !name.hasPrefix("should-fail") && !name.hasPrefix("cs9-") {
            var dumpfile = assets + "/" + name
            if name.hasSuffix(".gz") {
                dumpfile = work.url.appendingPathComponent("vector.dump").path
                #expect(try run("/bin/sh", ["-c", "gzip -dc '\(assets)/\(name)' > '\(dumpfile)'"]).status == 0)
            }
            var arguments = ["--from-file", dumpfile, image]
            if let version = try? String(contentsOfFile: assets + "/" + name + ".version", encoding: .utf8) {
                let v = version.trimmingCharacters(in: .whitespacesAndNewlines)
                arguments = ["--min-version=\(v)", "--max-version=\(v)"] + arguments
            }
            let built = try runTool("mkcomposefs", arguments)
            #expect(built.status == 0, "\(name): \(built.stderr)")
            let mount = try mountFuse(image: image, basedir: nil, at: mountpoint)
            #expect(mount.status == 0, "\(name): \(mount.stderr)")
            guard mount.status == 0 else { continue }
            defer { unmountFuse(mountpoint) }
            checked += 1
            let tree = try DumpfileParser.parse(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dumpfile))))
            let expected = TreeSnapshot(tree: tree).asMounted(version: try imageVersion(image)).userXattrsOnly()
            var options = Self.mountOptions
            options.readContents = false
            let mounted = try TreeSnapshot.capture(root: mountpoint, options: options)
            let differences = expected.differences(from: mounted)
            #expect(differences.isEmpty, "\(name):\n\(differences.prefix(20).joined(separator: "\n"))")
            // Inline contents are served from the image.
            var pending = [("", tree)]
            while let (path, inode) = pending.popLast() {
                pending += inode.entries.map { (path + "/" + String(decoding: $0.name, as: UTF8.self), $0.inode) }
                guard inode.isRegular, let content = inode.content, !content.isEmpty else { continue }
                let read = FileManager.default.contents(atPath: mountpoint + path).map { [UInt8]($0) }
                #expect(read == content, "\(name): \(path)")
            }
        }
        #expect(checked > 8)
    }

    /// A tree with every kind of entry and hard links, from a dumpfile, with its objects:
    /// hard links share an inode number and count their links; contents come back.
    @Test(.enabled(if: FuseEnvironment.canMount)) func hardLinksAndBackedFilesFromADumpfile() throws {
        let work = try TemporaryDirectory()
        let objects = work.url.appendingPathComponent("objects").path
        let big = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 7) }
        let objectPath = "ab/cdef"
        try FileManager.default.createDirectory(atPath: objects + "/ab", withIntermediateDirectories: true)
        try Data(big).write(to: URL(fileURLWithPath: objects + "/" + objectPath))
        let dump = """
            / 4096 40755 2 0 0 0 1700000000.0 - - - user.root=yes
            /big 100000 100644 2 1000 1000 0 1700000001.500000000 \(objectPath) - - user.kind=big
            /big-link 0 @100644 2 0 0 0 0.0 /big - -
            /dev 0 20620 1 0 6 1025 1700000002.0 - - -
            /hello 6 100600 3 0 0 0 1700000003.0 - hello\\n - user.greeting=hi
            /hello-a 0 @100600 3 0 0 0 0.0 /hello - -
            /hello-b 0 @100600 3 0 0 0 0.0 /hello - -
            /wh 0 20000 1 0 0 0 1700000004.0 - - -
            /fifo 0 10644 1 0 0 0 1700000005.0 - - -
            /link 11 120777 1 0 0 0 1700000006.0 hello-a - -

            """
        let dumpfile = work.url.appendingPathComponent("tree.dump").path
        try dump.write(toFile: dumpfile, atomically: true, encoding: .utf8)
        let image = work.url.appendingPathComponent("tree.cfs").path
        let result = try runTool("mkcomposefs", ["--from-file", dumpfile, image])
        #expect(result.status == 0, "\(result.stderr)")
        let mountpoint = work.url.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let mount = try mountFuse(image: image, basedir: objects, at: mountpoint)
        #expect(mount.status == 0, "\(mount.stderr)")
        guard mount.status == 0 else { return }
        defer { unmountFuse(mountpoint) }
        func info(_ name: String) -> stat {
            var st = stat()
            #expect(lstat(mountpoint + "/" + name, &st) == 0, "\(name): \(errnoText())")
            return st
        }
        #expect(info("big").st_ino == info("big-link").st_ino)
        #expect(info("big").st_nlink == 2)
        #expect(info("hello").st_ino == info("hello-a").st_ino && info("hello-a").st_ino == info("hello-b").st_ino)
        #expect(info("hello").st_nlink == 3)
        #expect(info("big").st_ino != info("hello").st_ino)
        #expect(FileManager.default.contents(atPath: mountpoint + "/big-link").map { [UInt8]($0) } == big)
        #expect(FileManager.default.contents(atPath: mountpoint + "/hello-b") == Data("hello\n".utf8))
        #expect(info("dev").st_rdev == 1025 && info("dev").st_mode == S_IFCHR | 0o620)
        #expect(info("fifo").st_mode == S_IFIFO | 0o644)
        // A whiteout device in a dumpfile comes out escaped, as a marked empty file.
        #expect(info("wh").st_mode & S_IFMT == S_IFREG && info("wh").st_size == 0)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: mountpoint + "/link") == "hello-a")
        #expect(info("big").st_uid == 1000 && info("big").st_mtim.tv_sec == 1_700_000_001 && info("big").st_mtim.tv_nsec == 500_000_000)
        var value = [UInt8](repeating: 0, count: 64)
        let size = cfs_lgetxattr(mountpoint + "/hello-a", "user.greeting", &value, value.count)
        #expect(size == 2 && Array(value[..<2]) == Array("hi".utf8))
        // Reading past the end, and from the middle, of an inline and a backed file.
        for (name, bytes) in [("hello", Array("hello\n".utf8)), ("big", big)] {
            let fd = open(mountpoint + "/" + name, O_RDONLY)
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 10)
            #expect(pread(fd, &buffer, 10, 3) == min(10, bytes.count - 3))
            #expect(Array(buffer[..<min(10, bytes.count - 3)]) == Array(bytes[3..<min(13, bytes.count)]))
            #expect(pread(fd, &buffer, 10, off_t(bytes.count + 5)) == 0)
        }
        // SEEK_DATA/SEEK_HOLE: each file is one extent of data.
        for (name, size) in [("hello", 6), ("big", big.count)] {
            let fd = open(mountpoint + "/" + name, O_RDONLY)
            defer { close(fd) }
            #expect(lseek(fd, 2, Linux.SEEK_DATA) == 2, "\(name)")
            #expect(lseek(fd, 2, Linux.SEEK_HOLE) == off_t(size), "\(name)")
            #expect(lseek(fd, off_t(size), Linux.SEEK_DATA) < 0 && errno == ENXIO, "\(name)")
        }
        // Writes are refused.
        #expect(open(mountpoint + "/hello", O_WRONLY) < 0 && errno == EROFS)
    }

    /// POSIX ACLs of an image that has them are served (and enforced by the kernel);
    /// `-o noacl` hides them as the reference does for every image.
    @Test(.enabled(if: FuseEnvironment.canMount)) func posixACLs() throws {
        let work = try TemporaryDirectory()
        // user::rw- user:65534:r-- group::--- mask::r-- other::---
        var acl: [UInt8] = [2, 0, 0, 0]
        for (tag, perm, id) in [(1, 6, UInt32.max), (2, 4, 65534), (4, 0, UInt32.max), (0x10, 4, UInt32.max), (0x20, 0, UInt32.max)] {
            acl += [UInt8(tag), 0, UInt8(perm), 0] + withUnsafeBytes(of: id.littleEndian) { Array($0) }
        }
        let escaped = acl.map { String(format: "\\x%02x", $0) }.joined()
        let dump = """
            / 4096 40755 2 0 0 0 1700000000.0 - - -
            /secret 7 100640 1 0 0 0 1700000000.0 - hidden\\n - system.posix_acl_access=\(escaped) user.note=x

            """
        let dumpfile = work.url.appendingPathComponent("acl.dump").path
        try dump.write(toFile: dumpfile, atomically: true, encoding: .utf8)
        let image = work.url.appendingPathComponent("acl.cfs").path
        let built = try runTool("mkcomposefs", ["--from-file", dumpfile, image])
        #expect(built.status == 0, "\(built.stderr)")
        let mountpoint = work.url.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        chmod(work.url.path, 0o755)
        for noacl in [false, true] {
            let mount = try mountFuse(image: image, basedir: nil, at: mountpoint, options: ["allow_other"] + (noacl ? ["noacl"] : []))
            #expect(mount.status == 0, "\(mount.stderr)")
            guard mount.status == 0 else { continue }
            defer { unmountFuse(mountpoint) }
            let file = mountpoint + "/secret"
            var value = [UInt8](repeating: 0, count: 256)
            let size = cfs_lgetxattr(file, "system.posix_acl_access", &value, value.count)
            let getError = errno
            var names = [CChar](repeating: 0, count: 256)
            let listed = cfs_llistxattr(file, &names, names.count)
            let list = names[..<max(listed, 0)].split(separator: 0).map { String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            // nobody may read it through the ACL alone (other has no access).
            let asNobody = try run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "/bin/cat", file])
            if noacl {
                #expect(size < 0 && getError == EOPNOTSUPP)
                #expect(list == ["user.note"])
                #expect(asNobody.status != 0)
            } else {
                #expect(size == acl.count && Array(value[..<max(size, 0)]) == acl)
                #expect(list.sorted() == ["system.posix_acl_access", "user.note"])
                #expect(asNobody.status == 0 && asNobody.stdout == "hidden\n", "\(asNobody.stderr)")
            }
        }
    }

    /// A missing object fails the open, a changed one is refused: never wrong data.
    @Test(.enabled(if: FuseEnvironment.canMount)) func missingOrTamperedObjectsAreErrors() throws {
        var options = RandomTree.Options()
        options.largeFileChance = 0
        let (built, _) = try Self.build(seed: 7, options: options)
        let objectFiles = try listFiles(built.objects)
        #expect(objectFiles.count >= 6)
        // Which file is backed by which object: objects are named by fs-verity digest.
        var fileOfObject: [String: String] = [:]
        for (path, entry) in try TreeSnapshot.capture(root: built.source, options: { var o = TreeSnapshot.Options(); o.readContents = false; return o }()).entries
        where entry.type == S_IFREG && entry.size > 64 {
            let fd = open(built.source + path, O_RDONLY | O_CLOEXEC)
            defer { close(fd) }
            let hex = try FsVerity.digest(fileDescriptor: fd).hex
            fileOfObject[String(hex.prefix(2)) + "/" + String(hex.dropFirst(2))] = String(path.dropFirst())
        }
        let victims = objectFiles.filter { fileOfObject[$0] != nil }.prefix(3)
        #expect(victims.count == 3)
        guard victims.count == 3 else { return }
        let (missing, resized, flipped) = (victims[victims.startIndex], victims[victims.startIndex + 1], victims[victims.startIndex + 2])
        try FileManager.default.removeItem(atPath: built.objects + "/" + missing)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: built.objects + "/" + resized))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("x".utf8))
        try handle.close()
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: built.objects + "/" + flipped)))
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: built.objects + "/" + flipped))

        for (verity, openRequests) in [(false, false), (true, false), (false, true), (true, true)] {
            let options = (verity ? ["verity"] : []) + (openRequests ? ["open_requests"] : [])
            let result = try mountFuse(image: built.image, basedir: built.objects, at: built.mountpoint, options: options)
            #expect(result.status == 0, "\(result.stderr)")
            guard result.status == 0 else { continue }
            defer { unmountFuse(built.mountpoint) }
            let path = { (object: String) in built.mountpoint + "/" + fileOfObject[object]! }
            // Files open without a request (this kernel allows it), so the reads fail
            // (EIO); with open requests the open does (ENOENT for a missing object).
            let failure = openRequests ? "open E\(EIO)" : "read E\(EIO)"
            #expect(digestOrError(path(missing)) == (openRequests ? "open E\(ENOENT)" : failure))
            #expect(digestOrError(path(resized)) == failure)
            if verity {
                #expect(digestOrError(path(flipped)) == failure)
            }
            // Untouched objects still read back, verified or not.
            for object in objectFiles where !victims.contains(object) {
                guard let file = fileOfObject[object] else { continue }
                #expect(digestOrError(built.mountpoint + "/" + file) == digestOrError(built.source + "/" + file), "\(file)")
            }
        }
    }

    /// `-o verity` checks backing files whatever digest the image records: images from SHA-256
    /// and SHA-512 repositories alike refuse an object changed in place (same size) with EIO.
    @Test(.enabled(if: FuseEnvironment.canMount), arguments: ["fsverity-sha256-12", "fsverity-sha512-12"])
    func verityChecksEveryDigestAlgorithm(algorithm: String) throws {
        let work = try TemporaryDirectory()
        let tree = work.url.appendingPathComponent("tree").path
        let repo = work.url.appendingPathComponent("repo").path
        let mountpoint = work.url.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let contents = ["tampered": String(repeating: "a", count: 5000), "intact": String(repeating: "b", count: 7000)]
        for (name, text) in contents { _ = FileManager.default.createFile(atPath: tree + "/" + name, contents: Data(text.utf8)) }
        #expect(try runTool("cfsctl", ["--repo", repo, "init", "--insecure", "--algorithm", algorithm]).status == 0)
        let created = try runTool("cfsctl", ["--repo", repo, "create-image", "--no-propagate-usr-to-root", tree])
        #expect(created.status == 0, "\(created.stderr)")
        guard let colon = created.stdout.firstIndex(of: ":") else { return }
        let image = repo + "/images/" + created.stdout[created.stdout.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        // The object of "tampered", changed in place without changing its size.
        let imageID = String(image.split(separator: "/").last ?? "")
        let backing = try runTool("cfsctl", ["--repo", repo, "dump-files", "--backing-path-only", imageID, "/tampered"])
        #expect(backing.status == 0, "\(backing.stderr)")
        let objectPath = repo + "/objects/" + (backing.stdout.split(separator: " ").last ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: objectPath)))
        #expect(bytes.count == 5000)
        bytes[2500] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: objectPath))

        let result = try mountFuse(image: image, basedir: repo + "/objects", at: mountpoint, options: ["verity"])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountFuse(mountpoint) }
        #expect(digestOrError(mountpoint + "/tampered") == "read E\(EIO)")
        #expect(digestOrError(mountpoint + "/intact") == digestOrError(tree + "/intact"))
    }

    /// Bad images are refused before mounting; a corrupted one that passes the header
    /// checks gives errors, never a crash.
    @Test(.enabled(if: FuseEnvironment.canMount)) func corruptImagesFailCleanly() throws {
        let (built, _) = try Self.build(seed: 3)
        let image = try [UInt8](Data(contentsOf: URL(fileURLWithPath: built.image)))
        let bad = built.work.url.appendingPathComponent("bad.cfs").path
        for (label, bytes) in [("truncated", Array(image.prefix(2000))), ("zeros", [UInt8](repeating: 0, count: 8192)),
                               ("wrong magic", [0x42] + image.dropFirst())] {
            try Data(bytes).write(to: URL(fileURLWithPath: bad))
            let result = try mountFuse(image: bad, basedir: built.objects, at: built.mountpoint)
            #expect(result.status == 1, "\(label)")
            #expect(result.stderr.contains("composefs-fuse:"), "\(label): \(result.stderr)")
            #expect(!isMounted(built.mountpoint), "\(label)")
            if isMounted(built.mountpoint) { unmountFuse(built.mountpoint) }
        }
        // Random damage past the headers: walking the tree may fail, the server must not.
        var random = SplitMix64(seed: 99)
        for round in 0..<12 {
            var damaged = image
            for _ in 0..<40 {
                let at = 1024 + 128 + random.int(below: damaged.count - 1024 - 128)
                damaged[at] = UInt8(truncatingIfNeeded: random.next())
            }
            try Data(damaged).write(to: URL(fileURLWithPath: bad))
            let result = try mountFuse(image: bad, basedir: built.objects, at: built.mountpoint)
            guard result.status == 0 else {
                #expect(result.stderr.contains("composefs-fuse:"), "round \(round): \(result.stderr)")
                continue
            }
            defer { unmountFuse(built.mountpoint) }
            _ = observe(built.mountpoint)
            var st = stat()
            #expect(stat(built.mountpoint, &st) == 0 && st.st_ino == 1, "round \(round): the server died (\(errnoText()))")
        }
    }

    @Test(.enabled(if: FuseEnvironment.canMount)) func commandLine() throws {
        let (built, _) = try Self.build(seed: 5, options: { var o = RandomTree.Options(); o.directories = 1...2; return o }())
        let help = try runTool("composefs-fuse", ["--help"])
        #expect(help.status == 0 && help.stdout.contains("source=") && help.stdout.contains("basedir="))
        let version = try runTool("composefs-fuse", ["-V"])
        #expect(version.status == 0 && version.stdout.contains("FUSE library version"))
        let noMountpoint = try runTool("composefs-fuse", [])
        #expect(noMountpoint.status == 1 && noMountpoint.stdout.contains("usage:"))
        let noSource = try runTool("composefs-fuse", ["-o", "basedir=\(built.objects)", built.mountpoint])
        #expect(noSource.status == 1 && noSource.stderr.contains("no image"))
        let missingImage = try mountFuse(image: built.image + ".missing", basedir: built.objects, at: built.mountpoint)
        #expect(missingImage.status == 1 && missingImage.stderr.contains("No such file"))
        let missingBasedir = try mountFuse(image: built.image, basedir: built.objects + ".missing", at: built.mountpoint)
        #expect(missingBasedir.status == 1 && missingBasedir.stderr.contains("basedir"))
        let unknownOption = try mountFuse(image: built.image, basedir: built.objects, at: built.mountpoint, options: ["bogus_option"])
        #expect(unknownOption.status == 1)
        #expect(!isMounted(built.mountpoint))
        // Daemon mode (the default): the parent returns once mounted, the daemon serves.
        let daemon = try mountFuse(image: built.image, basedir: built.objects, at: built.mountpoint, foreground: false)
        #expect(daemon.status == 0, "\(daemon.stderr)")
        if daemon.status == 0 {
            let expected = try Self.expected(from: built.source, image: built.image)
            #expect(expected.differences(from: try TreeSnapshot.capture(root: built.mountpoint, options: Self.mountOptions)).isEmpty)
            unmountFuse(built.mountpoint)
        }
        // IMAGE MOUNTPOINT, as the usage line of the reference suggests; single-threaded.
        let process = Process()
        process.executableURL = productsDirectory().appendingPathComponent("composefs-fuse")
        process.arguments = ["-f", "-s", "-o", "basedir=\(built.objects)", built.image, built.mountpoint]
        try process.run()
        var waited = 0
        while !isMounted(built.mountpoint) && process.isRunning && waited < 500 {
            usleep(20_000)
            waited += 1
        }
        #expect(isMounted(built.mountpoint))
        let expected = try Self.expected(from: built.source, image: built.image)
        #expect(expected.differences(from: try TreeSnapshot.capture(root: built.mountpoint, options: Self.mountOptions)).isEmpty)
        unmountFuse(built.mountpoint)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }
}
