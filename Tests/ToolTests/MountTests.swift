// Real kernel mounts of images built by our mkcomposefs, through mount.composefs and the
// ComposeFSMount library: the mounted tree must be the tree the image was built from.

import CComposeFSSys
import ComposeFS
import Dumpfile
import Foundation
import FsVerity
import Testing
import TestSupport

@testable import ComposeFSMount

enum MountEnvironment {
    /// Why real mounts cannot run here, or nil when they can.
    static let unavailableReason: String? = {
        guard geteuid() == 0 else { return "not root" }
        let probe = FileManager.default.temporaryDirectory.appendingPathComponent("cfs-mount-probe-\(getpid())").path
        mkdir(probe, 0o700)
        defer { rmdir(probe) }
        guard cfs_mount_legacy("cfs-probe", probe, "tmpfs", 0, 1, nil) == 0 else { return "mount(2) is not permitted" }
        _ = cfs_umount(probe, 0)
        return nil
    }()

    static var canMount: Bool {
        if let unavailableReason { print("skipping mount test: \(unavailableReason)") }
        return unavailableReason == nil
    }

    /// Whether the file system holding `path` can give files fs-verity (this kernel may not).
    static func supportsVerity(at path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(fd) }
        do {
            _ = try FsVerity.measure(fileDescriptor: fd)
        } catch .notSupported {
            return false
        } catch {}
        return true
    }
}

/// Unmounts, then checks nothing of the mount is left: no mount, no loop device on a file of
/// the test's scratch directory (the mountpoint's parent). Tests run in parallel, so only
/// what belongs to this test is looked at.
func unmountAndCheck(_ path: String) {
    // Tests run in parallel: a child another test is just forking may hold a copy of a
    // descriptor into the mount for a moment (EBUSY), so retry briefly.
    var result = cfs_umount(path, 0)
    for _ in 0..<500 where result == -EBUSY {
        usleep(20_000)
        result = cfs_umount(path, 0)
    }
    #expect(result == 0, "umount \(path): \(String(cString: strerror(-result)))")
    let mountinfo = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    #expect(!mountinfo.contains(" \(path) "), "still mounted: \(path)")
    let scratch = (path as NSString).deletingLastPathComponent + "/"
    // Autoclear detaches a loop device when its last user goes, which may take a moment.
    var busy: [String] = []
    for _ in 0..<50 {
        busy = loopDevicesBacking(scratch)
        if busy.isEmpty { break }
        usleep(20_000)
    }
    #expect(busy.isEmpty, "loop devices left: \(busy)")
}

/// No temporary EROFS mount or its directory is left (only the temporary-mount mechanism
/// makes them, and only MountTests, which runs serially, uses it).
func expectNoTemporaryMounts() {
    let mountinfo = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    #expect(!mountinfo.contains("/tmp/.composefs."), "a temporary EROFS mount is left")
    let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp"))?.filter { $0.hasPrefix(".composefs.") } ?? []
    #expect(leftovers.isEmpty, "temporary directories left: \(leftovers)")
}

/// Loop devices whose backing file path contains `marker`.
func loopDevicesBacking(_ marker: String) -> [String] {
    let devices = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []
    return devices.filter { device in
        guard device.hasPrefix("loop"),
            let backing = try? String(contentsOfFile: "/sys/block/\(device)/loop/backing_file", encoding: .utf8)
        else { return false }
        return backing.contains(marker)
    }
}

/// The composefs format version recorded in an image's header.
func imageVersion(_ image: String) throws -> UInt32 {
    let data = try Data(contentsOf: URL(fileURLWithPath: image))
    return UInt32(data[12]) | UInt32(data[13]) << 8 | UInt32(data[14]) << 16 | UInt32(data[15]) << 24
}

extension TreeSnapshot {
    /// What a composefs mount of an image built from this tree shows: whiteouts (character
    /// devices 0:0) come out escaped as empty regular files marked by overlay xattrs, which
    /// also mark their directory (opaque too from format version 1).
    func asMounted(version: UInt32) -> TreeSnapshot {
        var result = self
        for (path, entry) in entries where entry.type == S_IFCHR && entry.rdev == 0 {
            var escaped = entry
            escaped.type = S_IFREG
            escaped.size = 0
            escaped.rdev = 0
            if includesContents {
                escaped.contentDigest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            }
            escaped.xattrs["trusted.overlay.whiteout"] = []
            escaped.xattrs["user.overlay.whiteout"] = []
            result.entries[path] = escaped
            let parentPath = path.split(separator: "/").dropLast().joined(separator: "/")
            let parentKey = "/" + parentPath
            guard var parent = result.entries[parentKey] else { continue }
            parent.xattrs["trusted.overlay.whiteouts"] = []
            parent.xattrs["user.overlay.whiteouts"] = []
            if version >= 1 {
                parent.xattrs["trusted.overlay.opaque"] = Array("x".utf8)
                parent.xattrs["user.overlay.opaque"] = Array("x".utf8)
            }
            result.entries[parentKey] = parent
        }
        return result
    }

    /// The tree a dumpfile describes, as a snapshot without contents.
    init(tree root: Inode) {
        var identities: [ObjectIdentifier: [String]] = [:]
        var records: [(String, Inode)] = []
        func visit(_ inode: Inode, _ path: String) {
            records.append((path.isEmpty ? "/" : path, inode))
            for entry in inode.entries {
                let childPath = path + "/" + String(decoding: entry.name, as: UTF8.self)
                if !entry.inode.isDirectory {
                    identities[ObjectIdentifier(entry.inode), default: []].append(childPath)
                }
                visit(entry.inode, childPath)
            }
        }
        visit(root, "")
        for (path, inode) in records {
            var xattrs: [String: [UInt8]] = [:]
            for xattr in inode.xattrs {
                // Unreadable through the kernel on anything but files and directories.
                if xattr.key.starts(with: Array("user.".utf8)) && !inode.isRegular && !inode.isDirectory { continue }
                xattrs[String(decoding: xattr.key, as: UTF8.self)] = xattr.value
            }
            let group = identities[ObjectIdentifier(inode)].flatMap { $0.count > 1 ? $0.sorted()[0] : nil }
            entries[path] = Entry(
                type: mode_t(inode.fileType), permissions: mode_t(inode.mode & 0o7777), uid: inode.uid, gid: inode.gid,
                mtime: Int(inode.mtime.seconds), mtimeNanoseconds: Int(inode.mtime.nanoseconds),
                size: inode.isDirectory ? 0 : Int(inode.size), rdev: inode.isDevice ? UInt(inode.rdev) : 0,
                symlinkTarget: inode.isSymlink ? inode.payload.map { String(decoding: $0, as: UTF8.self) } : nil,
                xattrs: xattrs, contentDigest: nil,
                hardlinkGroup: group.map { String($0.dropFirst()) })
        }
        // Snapshots name hard-link groups by their relative path, without the leading slash.
    }
}

extension Inode {
    /// The inode at an absolute path ("/a/b"), if any.
    func lookup(_ path: String) -> Inode? {
        var inode = self
        for component in path.split(separator: "/") {
            guard let next = inode.entry(named: Array(component.utf8))?.inode else { return nil }
            inode = next
        }
        return inode
    }
}

@Suite(.serialized) struct MountTests {
    /// The tree of MkcomposefsTests plus what only root can make: devices, a whiteout,
    /// other owners, trusted.* xattrs including one overlayfs would otherwise interpret.
    static func makeRootTree(at root: URL) throws {
        _ = try MkcomposefsTests.makeTree(at: root)
        let path = root.path
        #expect(mknod(path + "/dir/null", S_IFCHR | 0o666, 1 << 8 | 3) == 0)
        #expect(mknod(path + "/dir/loop9", S_IFBLK | 0o660, 7 << 8 | 9) == 0)
        #expect(mknod(path + "/dir/sub/gone", S_IFCHR | 0o600, 0) == 0)
        #expect(chown(path + "/run.sh", 1234, 5678) == 0)
        #expect(lchown(path + "/dir/link", 42, 43) == 0)
        for (file, name, value) in [
            ("just65", "trusted.note", "secret"), ("dir", "trusted.overlay.custom", "kept"),
            ("exactly64", "user.a", "1"), ("exactly64", "user.b", String(repeating: "v", count: 300)),
        ] {
            #expect(cfs_lsetxattr(path + "/" + file, name, value, value.utf8.count) == 0, "\(file) \(name)")
        }
        // mknod and setxattr changed directory times; fix them again.
        var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 5), timespec(tv_sec: 1_700_000_000, tv_nsec: 5)]
        for dir in ["dir/sub", "dir", ""] { utimensat(AT_FDCWD, path + "/" + dir, &times, AT_SYMLINK_NOFOLLOW) }
    }

    /// mkcomposefs from a directory does not merge hard links (like the reference), so those
    /// are compared in the dumpfile tests instead.
    static func withoutHardlinks(_ snapshot: TreeSnapshot) -> TreeSnapshot {
        var result = snapshot
        for key in result.entries.keys { result.entries[key]?.hardlinkGroup = nil }
        return result
    }

    struct Built {
        let work: TemporaryDirectory
        let source: String
        let image: String
        let objects: String
        let mountpoint: String
    }

    static func buildRootTree() throws -> Built {
        let work = try TemporaryDirectory()
        let source = work.url.appendingPathComponent("tree").path
        try makeRootTree(at: URL(fileURLWithPath: source))
        let image = work.url.appendingPathComponent("tree.cfs").path
        let objects = work.url.appendingPathComponent("objects").path
        let mountpoint = work.url.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let result = try runTool("mkcomposefs", ["--digest-store=\(objects)", source, image])
        #expect(result.status == 0, "\(result.stderr)")
        return Built(work: work, source: source, image: image, objects: objects, mountpoint: mountpoint)
    }

    static func expectSameTree(_ built: Built, _ label: String) throws {
        let expected = try TreeSnapshot.capture(root: built.source).asMounted(version: try imageVersion(built.image))
        let mounted = try TreeSnapshot.capture(root: built.mountpoint)
        let differences = withoutHardlinks(expected).differences(from: withoutHardlinks(mounted))
        #expect(differences.isEmpty, "\(label): \(differences.joined(separator: "\n"))")
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func mountedTreeEqualsSource() throws {
        let built = try Self.buildRootTree()
        let result = try runTool("mount.composefs", ["-o", "basedir=\(built.objects)", built.image, built.mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountAndCheck(built.mountpoint) }
        try Self.expectSameTree(built, "mount.composefs")
        let info = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(info.contains(" \(built.mountpoint) ") && info.contains("overlay composefs"))
    }

    /// Objects spread over two stores, found through `basedir=A:B`.
    @Test(.enabled(if: MountEnvironment.canMount)) func severalBasedirs() throws {
        let built = try Self.buildRootTree()
        let second = built.work.url.appendingPathComponent("objects2").path
        let objects = try listFiles(built.objects)
        #expect(objects.count == 2)
        let moved = try #require(objects.last)
        let prefix = String(moved.prefix(2))
        try FileManager.default.createDirectory(atPath: second + "/" + prefix, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: built.objects + "/" + moved, toPath: second + "/" + moved)
        let result = try runTool(
            "mount.composefs", ["-o", "basedir=\(built.objects):\(second)", built.image, built.mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountAndCheck(built.mountpoint) }
        try Self.expectSameTree(built, "two basedirs")
    }

    /// Each way of putting the image under overlayfs, and the loop-device path for kernels
    /// whose EROFS cannot mount files, gives the same tree and leaves nothing behind.
    @Test(.enabled(if: MountEnvironment.canMount)) func everyMountMechanismGivesTheSameTree() throws {
        let built = try Self.buildRootTree()
        let options = MountOptions(basedirs: [built.objects])
        for mechanism in ComposefsMount.Mechanism.allCases {
            for loop in [false, true] {
                try ComposefsMount.mount(
                    image: built.image, at: built.mountpoint, options: options, mechanisms: [mechanism],
                    forceLoopDevice: loop)
                if loop {
                    #expect(loopDevicesBacking(built.image).count == 1, "\(mechanism): no loop device in use")
                }
                try Self.expectSameTree(built, "\(mechanism), loop device \(loop)")
                unmountAndCheck(built.mountpoint)
                expectNoTemporaryMounts()
            }
        }
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func mountHelperForMountCommand() throws {
        let helper = "/sbin/mount.composefs"
        guard !FileManager.default.fileExists(atPath: helper) else {
            print("skipping: \(helper) exists already and is not ours to replace")
            return
        }
        let built = try Self.buildRootTree()
        try FileManager.default.createSymbolicLink(
            atPath: helper, withDestinationPath: productsDirectory().appendingPathComponent("mount.composefs").path)
        defer { try? FileManager.default.removeItem(atPath: helper) }
        let result = try run("/bin/mount", ["-t", "composefs", "-o", "basedir=\(built.objects),ro", built.image, built.mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountAndCheck(built.mountpoint) }
        try Self.expectSameTree(built, "mount -t composefs")
    }

    /// Every reference vector, mounted without its objects: the metadata must be the dumpfile's.
    @Test(.enabled(if: MountEnvironment.canMount), .enabled(if: SharedAssets.runVectorTests, SharedAssets.vectorsMissing))
    func vectorsMountAsTheirDumpfiles() throws {
        let assets = try SharedAssets.vectors()
        let work = try TemporaryDirectory()
        let image = work.url.appendingPathComponent("vector.cfs").path
        let objects = work.url.appendingPathComponent("objects").path
        let mountpoint = work.url.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: objects, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        var mountedCount = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: assets).sorted()
        where (name.hasSuffix(".dump") || name.hasSuffix(".dump.gz")) && !name.hasPrefix("should-fail") {
            var dumpfile = assets + "/" + name
            if name.hasSuffix(".gz") {
                dumpfile = work.url.appendingPathComponent(String(name.dropLast(3))).path
                let gunzip = try run("/bin/sh", ["-c", "gzip -dc \"$0\" > \"$1\"", assets + "/" + name, dumpfile])
                #expect(gunzip.status == 0, "\(gunzip.stderr)")
            }
            var arguments = ["--from-file", dumpfile, image]
            if let version = try? String(contentsOfFile: assets + "/" + name + ".version", encoding: .utf8) {
                let v = version.trimmingCharacters(in: .whitespacesAndNewlines)
                arguments = ["--min-version=\(v)", "--max-version=\(v)"] + arguments
            }
            let tree = try DumpfileParser.parse(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dumpfile))))
            // overlayfs looks up the backing file to stat a file; sparse stand-ins will do.
            try Self.makePlaceholderObjects(for: tree, in: objects)
            let built = try runTool("mkcomposefs", arguments)
            #expect(built.status == 0, "\(name): \(built.stderr)")
            let mount = try runTool("mount.composefs", ["-o", "basedir=\(objects)", image, mountpoint])
            #expect(mount.status == 0, "\(name): \(mount.stderr)")
            guard mount.status == 0 else { continue }
            mountedCount += 1
            defer { unmountAndCheck(mountpoint) }
            var expected = TreeSnapshot(tree: tree).asMounted(version: try imageVersion(image))
            var options = TreeSnapshot.Options()
            options.readContents = false
            // A backed file without a redirect has no data overlayfs can find: the kernel
            // (with the reference tools too) fails even its lstat with EIO.
            options.excluding = Set(expected.entries.keys.filter { path in
                guard let entry = tree.lookup(path), entry.isRegular, entry.content == nil, entry.size > 0 else { return false }
                return entry.payload == nil
            })
            for path in options.excluding {
                var info = stat()
                #expect(lstat(mountpoint + path, &info) != 0 && errno == EIO, "\(name): \(path) is visible")
                expected.entries[path] = nil
            }
            let mounted = try TreeSnapshot.capture(root: mountpoint, options: options)
            let differences = expected.differences(from: mounted)
            #expect(differences.isEmpty, "\(name):\n\(differences.prefix(20).joined(separator: "\n"))")
        }
        #expect(mountedCount > 5)
    }

    /// Sparse files of the right size wherever the tree's backed files point.
    static func makePlaceholderObjects(for root: Inode, in objects: String) throws {
        var pending = [root]
        while let inode = pending.popLast() {
            pending += inode.entries.filter { !$0.isHardlink }.map(\.inode)
            guard inode.isRegular, inode.content == nil, inode.size > 0, let payload = inode.payload else { continue }
            let path = objects + "/" + String(decoding: payload, as: UTF8.self)
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            #expect(fd >= 0 && ftruncate(fd, off_t(inode.size)) == 0, "\(path)")
            close(fd)
        }
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func missingObjectFailsTheReadNotTheData() throws {
        let built = try Self.buildRootTree()
        let objectFiles = try listFiles(built.objects)
        let victim = try #require(objectFiles.first)
        try FileManager.default.removeItem(atPath: built.objects + "/" + victim)
        let result = try runTool("mount.composefs", ["-o", "basedir=\(built.objects)", built.image, built.mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountAndCheck(built.mountpoint) }
        var failures = 0
        for file in ["dir/big.bin", "dir/sub/copy.bin", "just65"] {
            let fd = open(built.mountpoint + "/" + file, O_RDONLY)
            if fd < 0 {
                #expect(errno == ENOENT || errno == EIO, "\(file): \(errnoText())")
                failures += 1
            } else {
                close(fd)
            }
        }
        #expect(failures >= 1, "no file lost its object")
    }

    /// Verification that cannot be enforced is refused, never quietly skipped; where the
    /// kernel has fs-verity, a tampered object reads as EIO.
    @Test(.enabled(if: MountEnvironment.canMount)) func verityIsEnforcedOrRefused() throws {
        let built = try Self.buildRootTree()
        if !MountEnvironment.supportsVerity(at: built.objects) {
            let refused = try runTool("mount.composefs", ["-o", "basedir=\(built.objects),verity", built.image, built.mountpoint])
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("does not support fs-verity"), "\(refused.stderr)")
            // tryverity mounts, without verification.
            let tried = try runTool("mount.composefs", ["-o", "basedir=\(built.objects),tryverity", built.image, built.mountpoint])
            #expect(tried.status == 0, "\(tried.stderr)")
            if tried.status == 0 {
                try Self.expectSameTree(built, "tryverity")
                unmountAndCheck(built.mountpoint)
            }
            print("fs-verity is not supported here: tampered-object check skipped")
            return
        }
        // mkcomposefs enabled verity on each object; swap one for a verity file of other content.
        let victim = try #require(try listFiles(built.objects).first)
        let path = built.objects + "/" + victim
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[0] ^= 0xff
        try FileManager.default.removeItem(atPath: path)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY)
        try FsVerity.enable(fileDescriptor: fd)
        close(fd)
        let result = try runTool("mount.composefs", ["-o", "basedir=\(built.objects),verity", built.image, built.mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountAndCheck(built.mountpoint) }
        var sawEIO = false
        for file in ["dir/big.bin", "dir/sub/copy.bin", "just65"] {
            let fd = open(built.mountpoint + "/" + file, O_RDONLY)
            if fd < 0 { sawEIO = sawEIO || errno == EIO } else { close(fd) }
        }
        #expect(sawEIO, "the tampered object was served")
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func digestOptionChecksTheImage() throws {
        let built = try Self.buildRootTree()
        let wrong = String(repeating: "ab", count: 32)
        let result = try runTool("mount.composefs", ["-o", "basedir=\(built.objects),digest=\(wrong)", built.image, built.mountpoint])
        #expect(result.status == 1)
        let fd = open(built.image, O_RDONLY)
        defer { close(fd) }
        guard (try? FsVerity.enable(fileDescriptor: fd)) != nil else {
            // As the reference: without fs-verity on the image there is nothing the kernel vouches for.
            #expect(result.stderr.contains("has no fs-verity"), "\(result.stderr)")
            return
        }
        #expect(result.stderr.contains("wrong fs-verity"), "\(result.stderr)")
        let digest = try FsVerity.measure(fileDescriptor: fd).hex
        let good = try runTool("mount.composefs", ["-o", "basedir=\(built.objects),digest=\(digest)", built.image, built.mountpoint])
        #expect(good.status == 0, "\(good.stderr)")
        if good.status == 0 { unmountAndCheck(built.mountpoint) }
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func writableOverlayWithUpperdir() throws {
        let built = try Self.buildRootTree()
        let upper = built.work.url.appendingPathComponent("upper").path
        let workdir = built.work.url.appendingPathComponent("work").path
        for dir in [upper, workdir] { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        let result = try runTool(
            "mount.composefs", ["-o", "basedir=\(built.objects),upperdir=\(upper),workdir=\(workdir),rw", built.image, built.mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        do {
            defer { unmountAndCheck(built.mountpoint) }
            try Data("new".utf8).write(to: URL(fileURLWithPath: built.mountpoint + "/added"))
            #expect(FileManager.default.contents(atPath: upper + "/added") == Data("new".utf8))
            // A backed file copied up keeps its content.
            let original = FileManager.default.contents(atPath: built.source + "/dir/big.bin")
            let handle = try #require(FileHandle(forUpdatingAtPath: built.mountpoint + "/dir/big.bin"))
            handle.seekToEndOfFile()
            handle.write(Data([1]))
            try handle.close()
            #expect(FileManager.default.contents(atPath: upper + "/dir/big.bin") == original.map { $0 + [1] })
        }

        // Read-only even with an upper layer when asked.
        let readOnly = try runTool(
            "mount.composefs", ["-o", "basedir=\(built.objects),upperdir=\(upper),workdir=\(workdir),ro", built.image, built.mountpoint])
        #expect(readOnly.status == 0, "\(readOnly.stderr)")
        if readOnly.status == 0 {
            #expect(creat(built.mountpoint + "/other", 0o644) < 0 && errno == EROFS)
            unmountAndCheck(built.mountpoint)
        }
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func idmappedMount() throws {
        guard let unshare = findExecutable("unshare") else {
            print("skipping: no unshare(1)")
            return
        }
        let built = try Self.buildRootTree()
        // A user namespace mapping 0 to 1000 (uids) and 2000 (gids), held open by a sleeper.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: unshare)
        holder.arguments = ["--user", "sleep", "60"]
        try holder.run()
        defer {
            // SIGKILL: the sleeper may hold descriptors it inherited from other tests' work.
            kill(holder.processIdentifier, SIGKILL)
            holder.waitUntilExit()
        }
        let pid = holder.processIdentifier
        var mapped = false
        for _ in 0..<100 where !mapped {
            usleep(20_000)
            mapped = (try? "0 1000 65536".write(toFile: "/proc/\(pid)/uid_map", atomically: false, encoding: .utf8)) != nil
        }
        #expect(mapped, "could not write the uid map")
        try "0 2000 65536".write(toFile: "/proc/\(pid)/gid_map", atomically: false, encoding: .utf8)
        let result = try runTool(
            "mount.composefs", ["-o", "basedir=\(built.objects),idmap=/proc/\(pid)/ns/user", built.image, built.mountpoint])
        #expect(result.status == 0, "\(result.stderr)")
        guard result.status == 0 else { return }
        defer { unmountAndCheck(built.mountpoint) }
        var info = stat()
        #expect(lstat(built.mountpoint + "/run.sh", &info) == 0)
        #expect(info.st_uid == 1234 + 1000 && info.st_gid == 5678 + 2000)
        #expect(lstat(built.mountpoint + "/small.txt", &info) == 0)
        #expect(info.st_uid == 1000 && info.st_gid == 2000)
        #expect(FileManager.default.contents(atPath: built.mountpoint + "/small.txt") == Data("hello\n".utf8))
    }

    /// Bad input: a clear message, exit 1, nothing mounted.
    @Test(.enabled(if: MountEnvironment.canMount)) func badInvocationsMountNothing() throws {
        let built = try Self.buildRootTree()
        let notImage = built.source + "/just65"
        let cases: [([String], String)] = [
            (["-o", "basedir=\(built.objects)", notImage, built.mountpoint], "not a composefs image"),
            (["-o", "basedir=\(built.objects)", built.work.url.path + "/missing.cfs", built.mountpoint], "No such file"),
            ([built.image, built.mountpoint], "No object dirs specified"),
            (["-o", "basedir=\(built.objects),bogus", built.image, built.mountpoint], "Unsupported option bogus"),
            (["-o", "basedir=\(built.objects),upperdir=/tmp", built.image, built.mountpoint], "Both workdir and upperdir"),
            (["-o", "basedir=\(built.objects),digest=xyz", built.image, built.mountpoint], "Invalid digest"),
            (["-o", "basedir=/nonexistent-basedir", built.image, built.mountpoint], "nonexistent-basedir"),
            (["-t", "ext4", "-o", "basedir=\(built.objects)", built.image, built.mountpoint], "Unsupported fs type"),
            (["-o", "basedir=\(built.objects)", built.image, built.work.url.path + "/no-such-dir"], "No such file"),
        ]
        for (arguments, message) in cases {
            let result = try runTool("mount.composefs", arguments)
            #expect(result.status == 1, "\(arguments)")
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
        let info = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!info.contains(built.work.url.path))
        #expect(loopDevicesBacking(built.work.url.path).isEmpty)
    }
}

@Suite struct MountOptionTests {
    @Test func parsesTheReferenceOptionSyntax() throws {
        let options = try MountOptions(parsing: "basedir=/a:/b\\,c,digest=\(String(repeating: "0", count: 64)),ro,rw,ro")
        #expect(options.basedirs == ["/a", "/b,c"])
        #expect(options.verity == .required)
        #expect(options.readOnly)
        #expect(try MountOptions(parsing: "basedir=/x,tryverity").verity == .ifSupported)
        #expect(try MountOptions(parsing: "basedir=/x,verity,tryverity").verity == .required)
        #expect(try MountOptions(parsing: "basedir=/x,upperdir=/u,workdir=/w").upperdir == "/u")
    }

    @Test func rejectsBadOptions() {
        let cases: [(String, String)] = [
            ("basedir", "No value specified for basedir option"),
            ("basedir=/a::/b", "incorrect format"),
            ("verity", "No object dirs specified"),
            ("basedir=/a,workdir=/w", "Both workdir and upperdir"),
            ("basedir=/a,digest=12", "Invalid digest"),
            ("basedir=/a,noatime", "Unsupported option noatime"),
        ]
        for (string, message) in cases {
            #expect {
                _ = try MountOptions(parsing: string)
            } throws: { error in
                "\(error)".contains(message)
            }
        }
    }
}
