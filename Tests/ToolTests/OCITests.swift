// End-to-end tests of `cfsctl oci`: images built by scripts/make-oci-image.py, served by a real
// registry (Debian's docker-registry) on loopback, copied with skopeo, and compared with what
// umoci unpacks and mkcomposefs builds from that.

import CComposeFSSys
import Crypto
import Foundation
import Testing

/// The test images and the registry, set up once per test run.
final class OCIFixture: @unchecked Sendable {
    static let shared: OCIFixture? = {
        do { return try OCIFixture() } catch {
            print("skipping OCI tests: \(error)")
            return nil
        }
    }()

    static var available: Bool { shared != nil }

    let work = try! TemporaryDirectory()
    /// The image with a zstd layer, and the same root file system with gzip only (for umoci).
    let layout: String
    let gzipLayout: String
    let multiArchLayout: String
    let registryPort: Int
    /// mkcomposefs's digest of the tree umoci unpacks.
    let umociDigest: String
    let umociRootfs: String

    struct SetupError: Error, CustomStringConvertible { var description: String }

    init() throws {
        for tool in ["skopeo", "umoci", "docker-registry", "python3", "zstd"] where findExecutable(tool) == nil {
            throw SetupError(description: "\(tool) is not installed (scripts/test.sh installs it)")
        }
        let base = work.url.path
        layout = base + "/layout"
        gzipLayout = base + "/layout-gzip"
        multiArchLayout = base + "/layout-multi"
        try Self.makeImage(layout, [])
        try Self.makeImage(gzipLayout, ["--no-zstd"])
        try Self.makeImage(multiArchLayout, ["--multi-arch"])

        let bundle = base + "/bundle"
        let unpack = try run(findExecutable("umoci")!, ["unpack", "--image", gzipLayout + ":test", bundle])
        guard unpack.status == 0 else { throw SetupError(description: "umoci unpack: \(unpack.stderr)") }
        umociRootfs = bundle + "/rootfs"
        umociDigest = try runTool("mkcomposefs", ["--print-digest-only", umociRootfs]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)

        // Below Linux's ephemeral ports (32768 and up), which clients' own sockets may hold.
        registryPort = 20000 + Int(getpid() % 12000)
        try Self.startRegistry(in: base, port: registryPort)
        for (source, name) in [(layout, "test:v1"), (multiArchLayout, "multi:v1")] {
            let copy = try run(findExecutable("skopeo")!, [
                "copy", "--quiet", "--all", "--dest-tls-verify=false", "oci:\(source):test", "docker://127.0.0.1:\(registryPort)/\(name)",
            ])
            guard copy.status == 0 else { throw SetupError(description: "skopeo copy: \(copy.stderr)") }
        }
    }

    static func makeImage(_ path: String, _ options: [String]) throws {
        let result = try run(findExecutable("python3")!, [scriptsDirectory() + "/make-oci-image.py", path] + options)
        guard result.status == 0 else { throw SetupError(description: "make-oci-image.py: \(result.stderr)") }
    }

    /// Starts docker-registry on `port` with its storage in `base`, with a watchdog that stops it
    /// when this process ends. `auth` is the YAML of the config's auth section, if any.
    static func startRegistry(in base: String, port: Int, auth: String? = nil) throws {
        var config = """
            version: 0.1
            log:
              level: error
            storage:
              filesystem:
                rootdirectory: \(base)/registry
            http:
              addr: 127.0.0.1:\(port)

            """
        if let auth { config += "auth:\n" + auth.split(separator: "\n").map { "  " + $0 + "\n" }.joined() }
        try config.write(toFile: base + "/registry.yml", atomically: true, encoding: .utf8)
        try startWatched(findExecutable("docker-registry")!, ["serve", base + "/registry.yml"], log: base + "/registry.log")
        try waitForServer(port: port, log: base + "/registry.log")
    }

    /// Waits until something answers HTTP on `port` (any status: registries with auth answer 401).
    static func waitForServer(port: Int, log: String) throws {
        for _ in 0..<100 {
            if (try? run("/usr/bin/curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/v2/"]))?.status == 0 { return }
            usleep(100_000)
        }
        throw SetupError(description: "no server on port \(port): " + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? ""))
    }

    /// Write ends of the pipes the servers' watchdogs wait on: they close when this process
    /// ends, however it ends, and each watchdog then stops its server.
    nonisolated(unsafe) static var lifelines: [Pipe] = []

    /// Runs a server in the background until this test process exits. SIGKILL, because
    /// children may inherit a signal mask that blocks SIGTERM.
    static func startWatched(_ executable: String, _ arguments: [String], log: String) throws {
        let quoted = ([executable] + arguments).map { "'\($0)'" }.joined(separator: " ")
        let script = "\(quoted) </dev/null >'\(log)' 2>&1 & child=$!; cat >/dev/null; kill -KILL $child"
        let lifeline = Pipe()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        process.standardInput = lifeline
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        lifelines.append(lifeline)
    }

    var registry: String { "127.0.0.1:\(registryPort)" }

    /// A new SHA-256 repository (the algorithm mkcomposefs's digests use).
    func repository(_ name: String) throws -> String {
        let path = work.url.path + "/" + name + "-" + UUID().uuidString
        let result = try runTool("cfsctl", ["--repo", path, "init", "--insecure", "--algorithm", "fsverity-sha256-12"])
        #expect(result.status == 0, "\(result.stderr)")
        return path
    }
}

func scriptsDirectory() -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts").path
}

@Suite(.serialized, .enabled(if: OCIFixture.available)) struct OCITests {
    var fixture: OCIFixture { OCIFixture.shared! }

    func cfsctl(_ repo: String, _ arguments: [String]) throws -> ProcessResult {
        try runTool("cfsctl", ["--repo", repo] + arguments)
    }

    /// Pulls and checks the output's shape; returns the lines by key.
    func pull(_ repo: String, _ image: String, tag: String? = nil) throws -> [String: String] {
        let result = try cfsctl(repo, ["oci", "pull", image] + (tag.map { [$0] } ?? []))
        #expect(result.status == 0, "pull \(image): \(result.stderr)")
        var fields: [String: String] = [:]
        for line in result.stdout.split(separator: "\n") {
            let key = String(line.prefix(9)).trimmingCharacters(in: .whitespaces)
            fields[key] = String(line.dropFirst(9))
        }
        #expect(Set(fields.keys) == ["manifest", "config", "verity", "tagged", "objects"], "\(result.stdout)")
        return fields
    }

    @Test func everySourceGivesTheTreeUmociUnpacks() throws {
        let repo = try fixture.repository("sources")
        let archive = fixture.work.url.path + "/image.oci.tar"
        let dockerArchive = fixture.work.url.path + "/image.docker.tar"
        let skopeo = findExecutable("skopeo")!
        #expect(try run(skopeo, ["copy", "--quiet", "oci:\(fixture.layout):test", "oci-archive:\(archive):test"]).status == 0)
        #expect(try run(skopeo, ["copy", "--quiet", "oci:\(fixture.gzipLayout):test", "docker-archive:\(dockerArchive):test:v1"]).status == 0)
        let sources = [
            ("oci:\(fixture.layout):test", "layout"),
            ("oci-archive:\(archive):test", "archive"),
            ("docker-archive:\(dockerArchive)", "docker-archive"),
            ("docker://\(fixture.registry)/test:v1", "registry"),
            ("docker://\(fixture.registry)/multi:v1", "multi"),
        ]
        for (source, tag) in sources {
            let fields = try pull(repo, source, tag: tag)
            #expect(fields["tagged"] == tag)
            let id = try cfsctl(repo, ["oci", "compute-id", tag])
            #expect(id.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == fixture.umociDigest, "\(source): \(id.stderr)")
        }
        // The layout, its archive and the registry copy are the same manifest.
        let images = try cfsctl(repo, ["oci", "images", "--json"])
        #expect(images.status == 0 && images.stdout.contains("\"name\": \"registry\""), "\(images.stdout)")
        // Nothing is fetched twice.
        let again = try pull(repo, "docker://\(fixture.registry)/test:v1", tag: "again")
        #expect(again["objects"] == "0 new + 0 already present objects; 0 B stored, 0 B inlined")
        let fsck = try cfsctl(repo, ["oci", "fsck"])
        #expect(fsck.status == 0 && fsck.stdout.contains("oci images: 6/6 ok"), "\(fsck.stdout)\(fsck.stderr)")
    }

    @Test func layerStreamsGiveBackTheTars() throws {
        let repo = try fixture.repository("layers")
        _ = try pull(repo, "oci:\(fixture.layout):test", tag: "t")
        let inspect = try cfsctl(repo, ["oci", "inspect", "t", "--config"])
        let config = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        let diffIDs = ((config?["rootfs"] as? [String: Any])?["diff_ids"] as? [String]) ?? []
        #expect(diffIDs.count == 3)
        for diffID in diffIDs {
            // `oci layer` and the generic `cat` of the layer stream both give the tar back.
            var size = 0
            for command in ["oci layer \(diffID)", "cat oci-layer-\(diffID)"] {
                let out = fixture.work.url.path + "/layer-\(UUID().uuidString).tar"
                let cat = try run("/bin/sh", ["-c", "'\(productsDirectory().path)/cfsctl' --repo '\(repo)' \(command) > '\(out)'"])
                #expect(cat.status == 0, "\(cat.stderr)")
                let data = try Data(contentsOf: URL(fileURLWithPath: out))
                #expect("sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined() == diffID, "\(command)")
                size = data.count
            }
            let summary = try cfsctl(repo, ["oci", "layer", diffID, "--json"])
            #expect(summary.stdout.contains("\"size\": \(size)"), "\(summary.stdout)")
            let listing = try cfsctl(repo, ["oci", "ls-layer", diffID])
            #expect(listing.status == 0 && !listing.stdout.isEmpty)
        }
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func mountedImageEqualsUmociTree() throws {
        let repo = try fixture.repository("mount")
        _ = try pull(repo, "docker://\(fixture.registry)/test:v1", tag: "m")
        let mountpoint = fixture.work.url.path + "/mnt-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let mounted = try cfsctl(repo, ["oci", "mount", "m", mountpoint])
        #expect(mounted.status == 0, "\(mounted.stderr)")
        guard mounted.status == 0 else { return }
        defer { unmountAndCheck(mountpoint) }
        // overlayfs shows its own xattrs on neither side; hard links are separate files in a
        // composefs image (as mkcomposefs makes them).
        var options = TreeSnapshot.Options()
        options.includeXattr = { !$0.hasPrefix("trusted.overlay.") }
        var ours = try TreeSnapshot.capture(root: mountpoint, options: options)
        var theirs = try TreeSnapshot.capture(root: fixture.umociRootfs, options: options)
        for key in ours.entries.keys { ours.entries[key]?.hardlinkGroup = nil }
        for key in theirs.entries.keys { theirs.entries[key]?.hardlinkGroup = nil }
        #expect(ours.differences(from: theirs) == [])
    }

    /// Debian's umoci (0.4.7) writes `insert` layers that end right after the last entry's
    /// data, without padding or end-of-archive blocks (umoci #436): they pull, give the tree
    /// umoci unpacks, and their streams give the layers back byte for byte.
    @Test func layersFromUmociInsertPull() throws {
        let umoci = try #require(findExecutable("umoci"))
        let base = fixture.work.url.path + "/umoci-insert-\(UUID().uuidString)"
        let content = base + "/content"
        try FileManager.default.createDirectory(atPath: content + "/dir", withIntermediateDirectories: true)
        try Data("hello".utf8).write(to: URL(fileURLWithPath: content + "/dir/small"))
        try Data((0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }).write(to: URL(fileURLWithPath: content + "/large"))
        for arguments in [
            ["init", "--layout", base + "/layout"], ["new", "--image", base + "/layout:t"],
            ["insert", "--image", base + "/layout:t", content + "/dir/small", "/dir/small"],
            ["insert", "--image", base + "/layout:t", content + "/large", "/large"],
        ] {
            let result = try run(umoci, arguments)
            try #require(result.status == 0, "umoci \(arguments): \(result.stderr)")
        }
        let repo = try fixture.repository("umoci-insert")
        let pulled = try cfsctl(repo, ["oci", "pull", "oci:\(base)/layout:t", "t"])
        #expect(pulled.status == 0, "\(pulled.stderr)")
        // The files are those umoci unpacks (the directories `insert` leaves implicit get the
        // time of unpacking there, so they are left out of the comparison).
        let unpack = try run(umoci, ["unpack", "--image", base + "/layout:t", base + "/bundle"])
        try #require(unpack.status == 0, "\(unpack.stderr)")
        #expect(try runTool("mkcomposefs", [base + "/bundle/rootfs", base + "/unpacked.cfs"]).status == 0)
        func files(_ dump: String) -> [Substring] {
            dump.split(separator: "\n").filter { !$0.split(separator: " ")[2].hasPrefix("4") }
        }
        let ours = try cfsctl(repo, ["oci", "dump", "t"])
        let theirs = try runTool("composefs-info", ["dump", base + "/unpacked.cfs"])
        #expect(files(ours.stdout) == files(theirs.stdout) && files(ours.stdout).count == 2, "\(ours.stdout)\n\(theirs.stdout)")
        // The layers really are unpadded, and come back as they were.
        let inspect = try cfsctl(repo, ["oci", "inspect", "t", "--config"])
        let config = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        let diffIDs = ((config?["rootfs"] as? [String: Any])?["diff_ids"] as? [String]) ?? []
        #expect(diffIDs.count == 2)
        for diffID in diffIDs {
            let out = base + "/layer.tar"
            let cat = try run("/bin/sh", ["-c", "'\(productsDirectory().path)/cfsctl' --repo '\(repo)' oci layer \(diffID) > '\(out)'"])
            #expect(cat.status == 0, "\(cat.stderr)")
            let data = try Data(contentsOf: URL(fileURLWithPath: out))
            #expect("sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined() == diffID)
            #expect(data.count % 512 != 0, "a padded layer: umoci no longer has the bug, the test needs another source")
        }
        #expect(try cfsctl(repo, ["oci", "fsck"]).status == 0)
    }

    @Test func badBlobsFailThePullAndTagNothing() throws {
        let repo = try fixture.repository("bad")
        func copyLayout(_ name: String) throws -> String {
            let path = fixture.work.url.path + "/\(name)-\(UUID().uuidString)"
            try FileManager.default.copyItem(atPath: fixture.layout, toPath: path)
            return path
        }
        func largestBlob(_ layout: String) throws -> String {
            let blobs = layout + "/blobs/sha256"
            let names = try FileManager.default.contentsOfDirectory(atPath: blobs)
            let sizes = try names.map { ($0, (try FileManager.default.attributesOfItem(atPath: blobs + "/" + $0)[.size] as? Int) ?? 0) }
            return blobs + "/" + (sizes.max { $0.1 < $1.1 }?.0 ?? "")
        }
        func expectFailure(_ layout: String, _ message: String) throws {
            let result = try cfsctl(repo, ["oci", "pull", "oci:\(layout):test", "bad"])
            #expect(result.status == 1 && result.stderr.contains(message), "\(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: repo + "/streams/refs/oci/bad"))
        }
        // A flipped byte in a compressed layer.
        let corrupted = try copyLayout("corrupt")
        let blob = try largestBlob(corrupted)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: blob))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: blob))
        try expectFailure(corrupted, "digest mismatch")
        // A truncated blob, and a missing one.
        let truncated = try copyLayout("truncated")
        let truncatedBlob = try largestBlob(truncated)
        let whole = try Data(contentsOf: URL(fileURLWithPath: truncatedBlob))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: truncatedBlob))
        try expectFailure(truncated, "size")
        let missing = try copyLayout("missing")
        try FileManager.default.removeItem(atPath: try largestBlob(missing))
        try expectFailure(missing, "not found")
        // A layer whose content is not the diff_id it is stored under.
        let tar = fixture.work.url.path + "/one-\(UUID().uuidString).tar"
        #expect(try run("/bin/tar", ["-C", scriptsDirectory(), "-cf", tar, "make-oci-image.py"]).status == 0)
        // (import-layer checks the data against the diff_id it is given.)
        let empty = try fixture.repository("import")
        let importWrong = try run("/bin/sh", [
            "-c", "'\(productsDirectory().path)/cfsctl' --repo '\(empty)' oci import-layer sha256:\(String(repeating: "ab", count: 32)) < '\(tar)'",
        ])
        #expect(importWrong.status == 1 && importWrong.stderr.contains("digest mismatch"), "\(importWrong.stderr)")
        #expect(try listFiles(empty + "/streams").isEmpty)
    }

    @Test func droppedConnectionsResumeOrFailCleanly() throws {
        for (mode, succeeds) in [("once", true), ("always", false)] {
            let repo = try fixture.repository("drop-\(mode)")
            let port = fixture.registryPort + (mode == "once" ? 1 : 2)
            try OCIFixture.startWatched(
                findExecutable("python3")!, [scriptsDirectory() + "/flaky-proxy.py", "\(port)", "\(fixture.registryPort)", mode],
                log: fixture.work.url.path + "/proxy-\(mode).log")
            for _ in 0..<50 where (try? run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/v2/"]))?.status != 0 { usleep(100_000) }
            let result = try cfsctl(repo, ["oci", "pull", "docker://127.0.0.1:\(port)/test:v1", "flaky"])
            if succeeds {
                #expect(result.status == 0, "\(result.stderr)")
                let id = try cfsctl(repo, ["oci", "compute-id", "flaky"])
                #expect(id.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == fixture.umociDigest)
            } else {
                #expect(result.status == 1 && result.stderr.contains("connection"), "\(result.stderr)")
                #expect(!FileManager.default.fileExists(atPath: repo + "/streams/refs/oci/flaky"))
            }
        }
    }

    /// A one-layer image made from the tar `build` writes (with Python's tarfile).
    func hostileImage(_ python: String) throws -> String {
        let base = fixture.work.url.path + "/hostile-\(UUID().uuidString)"
        let script = "import io, tarfile\nout = tarfile.open('\(base).tar', 'w', format=tarfile.PAX_FORMAT)\n"
            + "def add(name, kind=tarfile.REGTYPE, data=b'', **kw):\n"
            + "    info = tarfile.TarInfo(name); info.type = kind; info.size = len(data); info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644\n"
            + "    for k, v in kw.items(): setattr(info, k, v)\n"
            + "    out.addfile(info, io.BytesIO(data))\n"
            + python + "\nout.close()\n"
        let result = try run(findExecutable("python3")!, ["-c", script])
        #expect(result.status == 0, "\(result.stderr)")
        try OCIFixture.makeImage(base, ["--layer-tar", base + ".tar"])
        return base
    }

    @Test func hostileLayersAreRefusedOrContained() throws {
        let repo = try fixture.repository("hostile")
        let refused: [(String, String)] = [
            ("add('../escape', data=b'x')", "'..'"),
            ("add('a/../../escape', data=b'x')", "'..'"),
            ("add('link', tarfile.LNKTYPE, linkname='missing')", "hard link to missing target"),
            ("add('link', tarfile.LNKTYPE, linkname='../etc/passwd')", "'..'"),
            ("add('d', tarfile.DIRTYPE)\nadd('hl', tarfile.LNKTYPE, linkname='d')", "hard link to a directory"),
            ("add('loop', tarfile.SYMTYPE, linkname='loop')\nadd('loop/x', data=b'x')", "too many levels of symbolic links"),
        ]
        for (python, message) in refused {
            let image = try hostileImage(python)
            let result = try cfsctl(repo, ["oci", "pull", "oci:\(image):test", "hostile"])
            #expect(result.status == 1 && result.stderr.contains(message), "\(python): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: repo + "/streams/refs/oci/hostile"))
        }
        // Absolute paths and symlinks are resolved inside the image: nothing lands elsewhere.
        let contained = try hostileImage(
            "add('/abs', data=b'absolute')\nadd('etc', tarfile.DIRTYPE)\nadd('escape', tarfile.SYMTYPE, linkname='/etc')\n"
                + "add('escape/passwd', data=b'contained')\nadd('up', tarfile.SYMTYPE, linkname='../../../..')\nadd('up/top', data=b'top')")
        let pulled = try cfsctl(repo, ["oci", "pull", "oci:\(contained):test", "contained"])
        #expect(pulled.status == 0, "\(pulled.stderr)")
        let dump = try cfsctl(repo, ["oci", "dump", "contained"])
        let paths = dump.stdout.split(separator: "\n").map { String($0.split(separator: " ").first ?? "") }
        #expect(paths == ["/", "/abs", "/escape", "/etc", "/etc/passwd", "/top", "/up"], "\(dump.stdout)")
        // A tar claiming more data than it holds, and a sparse file of a petabyte.
        let truncated = try hostileImage("info = tarfile.TarInfo('big'); info.size = 1 << 40; out.addfile(info)")
        let truncatedResult = try cfsctl(repo, ["oci", "pull", "oci:\(truncated):test", "truncated"])
        #expect(truncatedResult.status == 1 && truncatedResult.stderr.contains("truncated"), "\(truncatedResult.stderr)")
        let sparse = try hostileImage(
            "add('bomb', data=b'', pax_headers={'GNU.sparse.major': '0', 'GNU.sparse.minor': '1', "
                + "'GNU.sparse.map': '0,0', 'GNU.sparse.size': str(1 << 50)})")
        let sparseResult = try cfsctl(repo, ["oci", "pull", "oci:\(sparse):test", "bomb"])
        #expect(sparseResult.status == 1 && sparseResult.stderr.contains("at most"), "\(sparseResult.stderr)")
    }

    @Test func sparseFilesAreExpanded() throws {
        let repo = try fixture.repository("sparse")
        let base = fixture.work.url.path + "/sparse-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: base + "/tree", withIntermediateDirectories: true)
        let file = base + "/tree/holes"
        let fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        #expect(ftruncate(fd, 8 << 20) == 0 && pwrite(fd, "middle", 6, 3 << 20) == 6 && pwrite(fd, "end", 3, (8 << 20) - 3) == 3)
        close(fd)
        for format in ["gnu", "posix"] {
            let tar = base + "-\(format).tar"
            #expect(try run("/bin/tar", ["--sparse", "--format=\(format)", "--numeric-owner", "-C", base + "/tree", "-cf", tar, "holes"]).status == 0)
            let image = base + "-\(format)"
            try OCIFixture.makeImage(image, ["--layer-tar", tar])
            let result = try cfsctl(repo, ["oci", "pull", "oci:\(image):test", format])
            #expect(result.status == 0, "\(result.stderr)")
            let dump = try cfsctl(repo, ["oci", "dump", format])
            let digest = try run(findExecutable("fsverity") ?? "/usr/bin/fsverity", ["digest", "--compact", file])
            #expect(dump.stdout.contains("/holes \(8 << 20) ") && dump.stdout.contains(digest.stdout.trimmingCharacters(in: .whitespacesAndNewlines)),
                    "\(format): \(dump.stdout) \(dump.stderr)")
        }
    }

    @Test func tagsKeepImagesThroughGarbageCollection() throws {
        let repo = try fixture.repository("gc")
        _ = try pull(repo, "oci:\(fixture.layout):test", tag: "keep")
        let objects = try listFiles(repo + "/objects").count
        #expect(try cfsctl(repo, ["gc"]).status == 0)
        #expect(try listFiles(repo + "/objects").count == objects)
        #expect(try cfsctl(repo, ["oci", "compute-id", "keep"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == fixture.umociDigest)
        let tagged = try cfsctl(repo, ["oci", "tag", "@", "x"])
        #expect(tagged.status != 0)
        let untag = try cfsctl(repo, ["oci", "untag", "keep"])
        #expect(untag.stdout == "Removed tag keep\n")
        #expect(try cfsctl(repo, ["gc"]).status == 0)
        #expect(try listFiles(repo + "/objects").isEmpty)
        #expect(try cfsctl(repo, ["oci", "images"]).stdout == "No images found\n")
        // fsck notices a lost layer object.
        _ = try pull(repo, "oci:\(fixture.layout):test", tag: "again")
        let layerObject = try listFiles(repo + "/objects").first { name in
            ((try? FileManager.default.attributesOfItem(atPath: repo + "/objects/" + name)[.size] as? Int) ?? 0) == 200_000 - 50_000
        }
        if let layerObject { try FileManager.default.removeItem(atPath: repo + "/objects/" + layerObject) }
        let fsck = try cfsctl(repo, ["oci", "fsck"])
        #expect(fsck.status == 1 && fsck.stdout.contains("oci images: 0/1 ok"), "\(fsck.stdout)")
    }

    /// A registry with htpasswd (basic) auth, and one behind a token service (bearer, with
    /// anonymous pulls of "public/" repositories), both filled by skopeo with credentials.
    @Test func authenticatedRegistries() throws {
        let base = fixture.work.url.path + "/auth"
        for directory in ["basic", "token"] {
            try FileManager.default.createDirectory(atPath: base + "/" + directory, withIntermediateDirectories: true)
        }
        let helper = scriptsDirectory() + "/registry-auth.py"
        let python = findExecutable("python3")!
        let htpasswd = try run(python, [helper, "htpasswd", "alice", "s3cret"])
        try #require(htpasswd.status == 0, "\(htpasswd.stderr)")
        try htpasswd.stdout.write(toFile: base + "/htpasswd", atomically: true, encoding: .utf8)
        let (basicPort, tokenPort, tokenServicePort) = (fixture.registryPort + 3, fixture.registryPort + 4, fixture.registryPort + 5)
        try OCIFixture.startWatched(
            python, [helper, "token-server", "\(tokenServicePort)", base, "test-issuer", "alice", "s3cret"], log: base + "/token-service.log")
        try OCIFixture.waitForServer(port: tokenServicePort, log: base + "/token-service.log")
        try OCIFixture.startRegistry(
            in: base + "/basic", port: basicPort, auth: "htpasswd:\n  realm: composefs-test\n  path: \(base)/htpasswd")
        try OCIFixture.startRegistry(in: base + "/token", port: tokenPort, auth: """
            token:
              realm: http://127.0.0.1:\(tokenServicePort)/token
              service: test-registry
              issuer: test-issuer
              rootcertbundle: \(base)/cert.pem
            """)
        let basicImage = "docker://127.0.0.1:\(basicPort)/private/test:v1"
        let (publicImage, privateImage) = ("docker://127.0.0.1:\(tokenPort)/public/test:v1", "docker://127.0.0.1:\(tokenPort)/private/test:v1")
        for image in [basicImage, publicImage, privateImage] {
            let copy = try run(findExecutable("skopeo")!, [
                "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret", "oci:\(fixture.layout):test", image,
            ])
            try #require(copy.status == 0, "skopeo copy to \(image): \(copy.stderr)")
        }
        let authFile = base + "/auth.json"
        let encoded = Data("alice:s3cret".utf8).base64EncodedString()
        try #"{"auths": {"127.0.0.1:\#(basicPort)": {"auth": "\#(encoded)"}}}"#.write(toFile: authFile, atomically: true, encoding: .utf8)

        // (image, extra arguments, environment, nil for success or what the error says)
        let cases: [(String, [String], [String: String]?, String?)] = [
            (basicImage, [], nil, "the registry wants credentials (use --creds USER:PASSWORD or an auth file)"),
            (basicImage, ["--creds", "alice:wrong"], nil, "the registry refused the credentials of 'alice'"),
            (basicImage, ["--creds", "alice:s3cret"], nil, nil),
            (basicImage, ["--authfile", authFile], nil, nil),
            (basicImage, [], ["REGISTRY_AUTH_FILE": authFile], nil),
            (publicImage, [], nil, nil),
            (privateImage, [], nil, "the registry wants credentials (use --creds USER:PASSWORD or an auth file)"),
            (privateImage, ["--creds", "alice:wrong"], nil, "the token service refused the credentials of 'alice'"),
            (privateImage, ["--creds", "alice:s3cret"], nil, nil),
        ]
        for (number, (image, arguments, environment, failure)) in cases.enumerated() {
            let repo = try fixture.repository("auth")
            let tag = "case\(number)"
            let result = try runTool(
                "cfsctl", ["--repo", repo, "oci", "pull"] + arguments + [image, tag],
                environment: environment.map { ProcessInfo.processInfo.environment.merging($0) { $1 } })
            if let failure {
                #expect(result.status == 1 && result.stderr.contains(failure), "case \(number): \(result.stderr)")
                #expect(!FileManager.default.fileExists(atPath: repo + "/streams/refs/oci/" + tag))
            } else {
                #expect(result.status == 0, "case \(number): \(result.stderr)")
                let id = try cfsctl(repo, ["oci", "compute-id", tag])
                #expect(id.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == fixture.umociDigest, "case \(number)")
            }
        }
    }

    /// On a terminal, pull reports each step and draws a progress bar on stderr that ends full;
    /// with stderr not a terminal it prints only the result.
    @Test func progressIsDrawnOnlyOnATerminal() throws {
        guard let script = findExecutable("script") else {
            print("skipping progressIsDrawnOnlyOnATerminal: script(1) is not installed")
            return
        }
        let repo = try fixture.repository("progress")
        let typescript = fixture.work.url.path + "/typescript-" + UUID().uuidString
        let command = [productsDirectory().appendingPathComponent("cfsctl").path, "--repo", repo, "oci", "pull", "oci:\(fixture.layout):test", "bar"]
            .map { "'\($0)'" }.joined(separator: " ")
        let result = try run(script, ["-q", "-e", "-c", command, typescript])
        #expect(result.status == 0, "\(result.stderr)")
        let output = try String(contentsOfFile: typescript, encoding: .utf8)
        #expect(output.contains("Fetching layer sha256:"), "\(output)")
        #expect(output.contains("\r" + String(repeating: "#", count: 40) + " "), "no full bar in: \(output)")
        #expect(output.contains("Building composefs image"))
        #expect(output.contains("tagged   bar"))

        let plain = try cfsctl(try fixture.repository("no-progress"), ["oci", "pull", "oci:\(fixture.layout):test", "bar"])
        #expect(plain.status == 0 && plain.stderr.isEmpty, "\(plain.stderr)")
    }

    /// An image whose manifest names another as its subject is listed as that image's referrer.
    @Test func referrersAreListed() throws {
        let referring = fixture.work.url.path + "/layout-referrer"
        if !FileManager.default.fileExists(atPath: referring) { try OCIFixture.makeImage(referring, ["--subject-of", fixture.layout]) }
        let repo = try fixture.repository("referrers")
        let base = try pull(repo, "oci:\(fixture.layout):test", tag: "base")
        let referrer = try pull(repo, "oci:\(referring):test", tag: "signature")
        let baseDigest = try #require(base["manifest"])
        let referrerDigest = try #require(referrer["manifest"])

        let images = try cfsctl(repo, ["oci", "images", "--json"])
        let list = try JSONSerialization.jsonObject(with: Data(images.stdout.utf8)) as? [[String: Any]] ?? []
        let counts = Dictionary(uniqueKeysWithValues: list.map { ($0["name"] as? String ?? "", $0["referrerCount"] as? Int ?? -1) })
        #expect(counts == ["base": 1, "signature": 0], "\(images.stdout)")
        let table = try cfsctl(repo, ["oci", "images"]).stdout
        let baseRow = table.split(separator: "\n").first { $0.contains(" base ") } ?? ""
        #expect(baseRow.hasSuffix("┆ 1    │"), "\(table)")

        let inspect = try cfsctl(repo, ["oci", "inspect", "base"])
        let object = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        let referrers = (object?["referrers"] as? [[String: String]]) ?? []
        #expect(referrers == [["digest": referrerDigest]], "\(inspect.stdout)")
        #expect(FileManager.default.fileExists(
            atPath: repo + "/streams/refs/oci-referrers/" + baseDigest + "/" + referrerDigest))
    }
}
