// composefs-setup-root, end to end and side by side with composefs-rs 0.9's: each run in a
// private mount namespace (`unshare -m`) over a prepared physical root (a directory bind-mounted
// at the sysroot, holding an insecure repository, as this kernel has no fs-verity, and the
// deployment's state directory). The tree that appears at the sysroot must be the image's, the
// state mounts must send writes where the configuration says, and every refusal must be one
// line, a non-zero status, and no mount left behind. Ours runs both ways it can build the tree:
// detached (Linux 6.15+) and staged on a temporary directory (older kernels).

import Foundation
import Testing
import TestSupport

/// A physical root with a repository holding one image, and its deployment's state directory.
final class SetupRootFixture {
    let scratch: TemporaryDirectory
    var base: String { scratch.url.path }
    var source: String { base + "/src" }
    var physical: String { base + "/physical" }
    var sysroot: String { base + "/sysroot" }
    var repository: String { physical + "/composefs" }
    let hex: String
    var state: String { physical + "/state/deploy/" + hex }
    var argument: String { "composefs.digest=?v1-sha512-12:" + hex }
    var configPath: String { base + "/setup-root-conf.toml" }

    /// `withEtc: false` builds an image without /etc (the default /etc overlay then fails
    /// after the image is mounted).
    init(withEtc: Bool = true, secure: Bool = false) throws {
        scratch = try TemporaryDirectory()
        let base = scratch.url.path
        let files: [(String, String)] = [
            ("usr/bin/tool", "#!/bin/sh\necho tool\n"),
            ("usr/lib/data.bin", String(repeating: "composefs object content ", count: 4000)),
            ("usr/share/doc/readme", "small\n"),
            ("etc/os-release", "NAME=setup-root-test\n"),
            ("etc/conf.d/app.conf", String(repeating: "key=value\n", count: 50)),
        ]
        for (path, content) in files where withEtc || !path.hasPrefix("etc/") {
            let url = URL(fileURLWithPath: base + "/src/" + path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(content.utf8).write(to: url)
        }
        for directory in ["src/var", "src/sysroot", "src/opt/private", "physical", "sysroot"] {
            try FileManager.default.createDirectory(atPath: base + "/" + directory, withIntermediateDirectories: true)
        }
        chmod(base + "/src/opt/private", 0o750)
        chmod(base + "/src/usr/bin/tool", 0o755)
        try FileManager.default.createSymbolicLink(atPath: base + "/src/usr/bin/alias", withDestinationPath: "tool")
        let initArguments = ["--repo", base + "/physical/composefs", "init"] + (secure ? [] : ["--insecure"])
        let initialized = try runTool("cfsctl", initArguments)
        guard initialized.status == 0 else { throw SetupRootTestError("cfsctl init: \(initialized.stderr)") }
        let created = try runTool("cfsctl", ["--repo", base + "/physical/composefs", "create-image", base + "/src"])
        guard created.status == 0, let id = created.stdout.split(separator: "\n").first, id.hasPrefix("sha512:") else {
            throw SetupRootTestError("cfsctl create-image: \(created.stderr)")
        }
        hex = String(id.dropFirst("sha512:".count))
        try resetState()
    }

    /// An empty state directory with etc and var, as a fresh deployment has.
    func resetState() throws {
        try? FileManager.default.removeItem(atPath: state)
        for directory in ["etc", "var"] {
            try FileManager.default.createDirectory(atPath: state + "/" + directory, withIntermediateDirectories: true)
        }
    }

    func writeConfig(_ text: String) throws { try Data(text.utf8).write(to: URL(fileURLWithPath: configPath)) }

    /// What the image's tree is: every entry of the source below the root but /sysroot's
    /// content, with type, mode, size of files, symlink targets and file digests.
    func sourceListing() throws -> String { try run("/bin/sh", ["-c", SetupRootRun.listing(source)]).stdout }
}

struct SetupRootTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One run of a composefs-setup-root in a fresh private mount namespace, and what it left.
struct SetupRootRun {
    var status: Int32
    var stderr: String
    /// The mounts under the fixture's directory once it exited: "MOUNTPOINT FSTYPE", relative.
    var mounts: [String]
    /// The sysroot's tree (see `SetupRootFixture.sourceListing`).
    var tree: String
    /// Which of the probes after the run succeeded: sysroot (the physical root is at
    /// /sysroot), root-write, etc-write, var-write.
    var probes: Set<String>
    /// Staging directories ours left in /run or /tmp.
    var leftovers: [String]

    /// `find`/`sha256sum` over DIR, /sysroot's content left out.
    static func listing(_ directory: String) -> String {
        """
        cd '\(directory)' && {
          find . -path ./sysroot -prune -o -mindepth 1 -type f -printf '%P f %m %s\\n' -o -mindepth 1 ! -type f -printf '%P %y %m %l\\n'
          find . -path ./sysroot -prune -o -type f -print0 | xargs -0 -r sha256sum
        } | sort
        """
    }

    init(
        _ binary: String, fixture: SetupRootFixture, commandLine: String? = nil, config: String? = nil,
        staging: Bool = false, extraArguments: [String] = [], sysroot: String? = nil
    ) throws {
        let commandLine = commandLine ?? fixture.argument
        let sysroot = sysroot ?? fixture.sysroot
        var arguments = [
            binary, "--sysroot", sysroot, "--config", config ?? fixture.base + "/no-config.toml", "--cmdline", commandLine,
        ]
        arguments += extraArguments
        let quoted = arguments.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        let base = fixture.base
        let script = """
            mount --bind '\(fixture.physical)' '\(fixture.sysroot)' || exit 99
            \(staging ? "COMPOSEFS_SETUP_ROOT_STAGING=1 " : "")\(quoted) 2>'\(base)/stderr'
            echo "@status $?"
            awk '{ for (i = 7; $i != "-"; i++) {}; print "@mount", $5, $(i + 1) }' /proc/self/mountinfo | grep ' \(base)' | sed 's| \(base)| |'
            test -f '\(sysroot)/sysroot/composefs/meta.json' && echo '@probe sysroot'
            (echo data >'\(sysroot)/root-written') 2>/dev/null && echo '@probe root-write'
            (echo data >'\(sysroot)/etc/written') 2>/dev/null && echo '@probe etc-write'
            (echo data >'\(sysroot)/var/written') 2>/dev/null && echo '@probe var-write'
            echo '@tree'
            \(Self.listing(sysroot)) | grep -v -e '^root-written ' -e '^etc/written ' -e '^var/written ' -e ' ./root-written$' -e ' ./etc/written$' -e ' ./var/written$'
            exit 0
            """
        let before = Self.stagingDirectories()
        let result = try run("/usr/bin/unshare", ["-m", "--propagation", "private", "sh", "-c", script])
        guard result.status == 0 else { throw SetupRootTestError("namespace script failed (\(result.status)): \(result.stderr)") }
        stderr = (try? String(contentsOfFile: base + "/stderr", encoding: .utf8)) ?? ""
        var status: Int32 = -1
        var mounts: [String] = []
        var probes: Set<String> = []
        var tree: [Substring] = []
        var inTree = false
        for line in result.stdout.split(separator: "\n", omittingEmptySubsequences: false) {
            if inTree {
                if !line.isEmpty { tree.append(line) }
            } else if line.hasPrefix("@status ") {
                status = Int32(line.dropFirst("@status ".count)) ?? -1
            } else if line.hasPrefix("@mount ") {
                mounts.append(String(line.dropFirst("@mount ".count)))
            } else if line.hasPrefix("@probe ") {
                probes.insert(String(line.dropFirst("@probe ".count)))
            } else if line == "@tree" {
                inTree = true
            }
        }
        self.status = status
        self.mounts = mounts
        self.probes = probes
        self.tree = tree.joined(separator: "\n") + (tree.isEmpty ? "" : "\n")
        leftovers = Self.stagingDirectories().subtracting(before).sorted()
    }

    static func stagingDirectories() -> Set<String> {
        var found: Set<String> = []
        for parent in ["/run", "/tmp"] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where name.hasPrefix("composefs-setup-root.") {
                found.insert(parent + "/" + name)
            }
        }
        return found
    }
}

@Suite(.serialized, .enabled(if: MountEnvironment.canMount))
struct SetupRootTests {
    static let ours = productsDirectory().appendingPathComponent("composefs-setup-root").path
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// Ours both ways, with a label for messages.
    static let ourModes: [(label: String, staging: Bool)] = [("detached", false), ("staged", true)]

    func file(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    /// The one bind mount the namespace starts with is all there is.
    func expectNothingLeft(_ run: SetupRootRun, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(run.mounts.count == 1 && run.mounts.first?.hasPrefix("/sysroot ") == true,
            "\(label): mounts left: \(run.mounts)", sourceLocation: sourceLocation)
        #expect(run.leftovers.isEmpty, "\(label): staging directories left: \(run.leftovers)", sourceLocation: sourceLocation)
    }

    @Test func bootsTheImage() throws {
        let fixture = try SetupRootFixture()
        let expected = try fixture.sourceListing()
        #expect(expected.contains("usr/lib/data.bin f 644 100000"))
        for (label, staging) in Self.ourModes {
            try fixture.resetState()
            let run = try SetupRootRun(Self.ours, fixture: fixture, staging: staging)
            #expect(run.status == 0, "\(label): \(run.stderr)")
            #expect(run.stderr.isEmpty, "\(label): \(run.stderr)")
            #expect(run.tree == expected, "\(label): the tree is not the image's")
            let physical = run.mounts.first?.split(separator: " ").last ?? ""
            #expect(run.mounts == ["/sysroot \(physical)", "/sysroot overlay", "/sysroot/sysroot \(physical)", "/sysroot/etc overlay",
                "/sysroot/var \(physical)"], "\(label): \(run.mounts)")
            #expect(run.probes == ["sysroot", "etc-write", "var-write"], "\(label): \(run.probes)")
            #expect(file(fixture.state + "/etc/upper/written") == "data\n", "\(label): /etc writes go to the state's upper")
            #expect(file(fixture.state + "/var/written") == "data\n", "\(label): /var is the state's")
            #expect(run.leftovers.isEmpty, "\(label): \(run.leftovers)")
            var info = stat()
            #expect(stat(fixture.state + "/etc/upper", &info) == 0 && info.st_mode & 0o777 == 0o755)
            #expect(stat(fixture.state + "/etc/work", &info) == 0 && info.st_mode & 0o777 == 0o700)
        }
    }

    @Test(.enabled(if: SharedAssets.runRSReferenceTests, SharedAssets.rsReferenceMissing))
    func sameTreeAsTheReference() throws {
        let reference = try SharedAssets.rsTool("composefs-setup-root")
        let fixture = try SetupRootFixture()
        let theirs = try SetupRootRun(reference, fixture: fixture)
        #expect(theirs.status == 0, "\(theirs.stderr)")
        let theirState = try listState(fixture)
        for (label, staging) in Self.ourModes {
            try fixture.resetState()
            let ours = try SetupRootRun(Self.ours, fixture: fixture, staging: staging)
            #expect(ours.status == 0, "\(label): \(ours.stderr)")
            #expect(ours.tree == theirs.tree, "\(label): trees differ")
            #expect(ours.mounts == theirs.mounts, "\(label): ours \(ours.mounts), theirs \(theirs.mounts)")
            #expect(ours.probes == theirs.probes, "\(label)")
            #expect(try listState(fixture) == theirState, "\(label): the state directories differ")
        }
    }

    /// The state directory's entries (names, types), after a run's writes.
    func listState(_ fixture: SetupRootFixture) throws -> String {
        try run("/bin/sh", ["-c", "cd '\(fixture.state)' && find . -printf '%P %y %m\\n' | sort"]).stdout
    }

    struct Variant: CustomTestStringConvertible, Sendable {
        var config: String
        var etc: String
        var `var`: String
        var testDescription: String { config.replacingOccurrences(of: "\n", with: " ") }
    }

    /// Where writes go for each mode: "state" (the state directory itself), "upper" (its
    /// upper/), "tmpfs" (nowhere on disk) or "refused" (read-only).
    static let variants: [Variant] = [
        Variant(config: "[etc]\nmount = \"none\"\n[var]\nmount = \"none\"", etc: "refused", var: "refused"),
        Variant(config: "[etc]\nmount = \"bind\"\n[var]\nmount = \"overlay\"", etc: "state", var: "upper"),
        Variant(config: "[etc]\nmount = \"transient\"\n[var]\nmount = \"transient\"", etc: "tmpfs", var: "tmpfs"),
        Variant(config: "[etc]\nmount = \"overlay\"\n[var]\nmount = \"bind\"", etc: "upper", var: "state"),
        Variant(config: "[etc]\ntransient = true\n[var]\ntransient = true", etc: "tmpfs", var: "tmpfs"),
    ]

    func expectWrites(_ run: SetupRootRun, _ fixture: SetupRootFixture, _ variant: Variant, _ label: String) {
        for (name, mode) in [("etc", variant.etc), ("var", variant.var)] {
            let inState = file(fixture.state + "/\(name)/written")
            let inUpper = file(fixture.state + "/\(name)/upper/written")
            switch mode {
            case "refused": #expect(!run.probes.contains("\(name)-write") && inState == nil, "\(label) \(name)")
            case "state": #expect(run.probes.contains("\(name)-write") && inState == "data\n", "\(label) \(name)")
            case "upper": #expect(run.probes.contains("\(name)-write") && inUpper == "data\n", "\(label) \(name)")
            default: #expect(run.probes.contains("\(name)-write") && inState == nil && inUpper == nil, "\(label) \(name)")
            }
        }
    }

    @Test(arguments: variants)
    func configurations(variant: Variant) throws {
        let fixture = try SetupRootFixture()
        try fixture.writeConfig(variant.config)
        // A bind mount shows the state directory (empty here) instead of the image's.
        let expected = try fixture.sourceListing().split(separator: "\n").filter { line in
            ![("etc", variant.etc), ("var", variant.var)].contains { name, mode in
                mode == "state" && (line.hasPrefix(name + "/") || line.contains("  ./\(name)/"))
            }
        }.map { $0 + "\n" }.joined()
        var theirs: SetupRootRun?
        if SharedAssets.runRSReferenceTests {
            let run = try SetupRootRun(try SharedAssets.rsTool("composefs-setup-root"), fixture: fixture, config: fixture.configPath)
            #expect(run.status == 0, "reference: \(run.stderr)")
            expectWrites(run, fixture, variant, "reference")
            theirs = run
            try fixture.resetState()
        }
        for (label, staging) in Self.ourModes {
            let run = try SetupRootRun(Self.ours, fixture: fixture, config: fixture.configPath, staging: staging)
            #expect(run.status == 0, "\(label): \(run.stderr)")
            #expect(run.tree == expected, "\(label): the tree is not the image's")
            expectWrites(run, fixture, variant, label)
            #expect(run.leftovers.isEmpty, "\(label): \(run.leftovers)")
            if let theirs {
                #expect(run.mounts == theirs.mounts, "\(label): ours \(run.mounts), theirs \(theirs.mounts)")
                #expect(run.tree == theirs.tree, "\(label): trees differ from the reference's")
            }
            try fixture.resetState()
        }
    }

    /// `[root] transient = true`: the root is writable, nothing of it reaches the disk, and the
    /// state mounts, /sysroot included, are in the visible tree as bootc mounts them
    /// (composefs-rs 0.9 mounts them under the transient overlay, where nothing sees them).
    @Test(arguments: ["[root]\ntransient = true", "[root]\ntransient = true\n[etc]\nmount = \"root\""])
    func transientRoot(config: String) throws {
        let fixture = try SetupRootFixture()
        try fixture.writeConfig(config)
        let expected = try fixture.sourceListing()
        let etcOverlay = !config.contains("\"root\"")
        for (label, staging) in Self.ourModes {
            let run = try SetupRootRun(Self.ours, fixture: fixture, config: fixture.configPath, staging: staging)
            #expect(run.status == 0, "\(label): \(run.stderr)")
            #expect(run.tree == expected, "\(label): the tree is not the image's")
            #expect(run.probes == ["sysroot", "root-write", "etc-write", "var-write"], "\(label): \(run.probes)")
            #expect(!FileManager.default.fileExists(atPath: fixture.physical + "/root-written"))
            #expect((file(fixture.state + "/etc/upper/written") == "data\n") == etcOverlay, "\(label)")
            #expect(file(fixture.state + "/var/written") == "data\n", "\(label)")
            #expect(run.mounts.contains("/sysroot/sysroot \(run.mounts.first?.split(separator: " ").last ?? "")"), "\(label): \(run.mounts)")
            #expect(run.leftovers.isEmpty, "\(label): \(run.leftovers)")
            try fixture.resetState()
        }
    }

    @Test func firstImageThatExistsWins() throws {
        let fixture = try SetupRootFixture()
        let missing = "composefs.digest=?v1-sha512-12:" + String(repeating: "ab", count: 64)
        let run = try SetupRootRun(Self.ours, fixture: fixture, commandLine: "quiet \(missing) rw \(fixture.argument)")
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.isEmpty)
        #expect(run.probes.contains("etc-write"))
        #expect(file(fixture.state + "/etc/upper/written") == "data\n")
    }

    /// --root-fs clones a directory as the new root (no EROFS needed); --target puts the new
    /// root elsewhere, leaving the sysroot alone (composefs-rs 0.9 accepts it but mounts over
    /// the sysroot anyway); a trailing command runs once the root is set up.
    @Test func testingOptions() throws {
        let fixture = try SetupRootFixture()
        let expected = try fixture.sourceListing()
        let cloned = try SetupRootRun(Self.ours, fixture: fixture, extraArguments: ["--root-fs", fixture.source])
        #expect(cloned.status == 0, "\(cloned.stderr)")
        #expect(cloned.tree == expected)
        if SharedAssets.runRSReferenceTests {
            try fixture.resetState()
            let theirs = try SetupRootRun(try SharedAssets.rsTool("composefs-setup-root"), fixture: fixture,
                extraArguments: ["--root-fs", fixture.source])
            #expect(theirs.status == 0 && theirs.tree == cloned.tree && theirs.mounts == cloned.mounts, "\(theirs.stderr)")
            try? FileManager.default.removeItem(atPath: fixture.source + "/root-written")
        }
        try? FileManager.default.removeItem(atPath: fixture.source + "/root-written")
        try FileManager.default.createDirectory(atPath: fixture.base + "/target", withIntermediateDirectories: true)
        for (label, staging) in Self.ourModes {
            try fixture.resetState()
            let targeted = try SetupRootRun(Self.ours, fixture: fixture, staging: staging, extraArguments: ["--target", fixture.base + "/target"])
            #expect(targeted.status == 0, "\(label): \(targeted.stderr)")
            #expect(targeted.mounts.first?.hasPrefix("/sysroot ") == true && targeted.mounts.dropFirst().allSatisfy { $0.hasPrefix("/target") },
                "\(label): \(targeted.mounts)")
            #expect(targeted.mounts.count == 5, "\(label): \(targeted.mounts)")
        }
        try fixture.resetState()
        let commanded = try SetupRootRun(Self.ours, fixture: fixture,
            extraArguments: ["--", "/bin/sh", "-c", "test -f '\(fixture.sysroot)/etc/os-release' && exit 7"])
        #expect(commanded.status == 7, "\(commanded.stderr)")
    }

    struct Refusal: CustomTestStringConvertible, Sendable {
        var name: String
        var commandLine: String?
        var config: String?
        /// What the fixture needs changed first.
        var prepare: @Sendable (SetupRootFixture) throws -> Void = { _ in }
        var withEtc = true
        var sysroot: String?
        var testDescription: String { name }
    }

    static let refusals: [Refusal] = [
        Refusal(name: "no argument", commandLine: "root=/dev/vda ro quiet"),
        Refusal(name: "not hex", commandLine: "composefs=" + String(repeating: "zz", count: 32)),
        Refusal(name: "short digest", commandLine: "composefs.digest=?v1-sha512-12:abcd"),
        Refusal(name: "unknown descriptor", commandLine: "composefs.digest=?v9-sha512-12:" + String(repeating: "0", count: 128)),
        Refusal(name: "image missing", commandLine: "composefs.digest=?v1-sha512-12:" + String(repeating: "0", count: 128)),
        Refusal(name: "secure argument on an insecure repository", commandLine: "SECURE"),
        Refusal(name: "algorithm mismatch", commandLine: "composefs=?" + String(repeating: "0", count: 64)),
        Refusal(name: "state directory missing", prepare: { try FileManager.default.removeItem(atPath: $0.state) }),
        Refusal(name: "state etc missing", prepare: { try FileManager.default.removeItem(atPath: $0.state + "/etc") }),
        Refusal(name: "state var missing", prepare: { try FileManager.default.removeItem(atPath: $0.state + "/var") }),
        Refusal(name: "bad configuration", config: "[etc\nmount = \"bind\""),
        Refusal(name: "unknown mount mode", config: "[etc]\nmount = \"tmpfs\""),
        Refusal(name: "image without /etc (fails once mounting began)", withEtc: false),
        Refusal(name: "sysroot missing", sysroot: "/nonexistent/sysroot"),
        Refusal(name: "repository missing", prepare: { try FileManager.default.moveItem(atPath: $0.repository, toPath: $0.physical + "/elsewhere") }),
    ]

    @Test(arguments: refusals)
    func refusal(_ refusal: Refusal) throws {
        let fixture = try SetupRootFixture(withEtc: refusal.withEtc)
        try refusal.prepare(fixture)
        if let config = refusal.config { try fixture.writeConfig(config) }
        let commandLine = refusal.commandLine == "SECURE" ? "composefs.digest=v1-sha512-12:" + fixture.hex : refusal.commandLine
        let config = refusal.config == nil ? nil : fixture.configPath
        var theirStatus: Int32?
        if SharedAssets.runRSReferenceTests {
            let theirs = try SetupRootRun(
                try SharedAssets.rsTool("composefs-setup-root"), fixture: fixture, commandLine: commandLine, config: config,
                sysroot: refusal.sysroot)
            theirStatus = theirs.status
        }
        for (label, staging) in Self.ourModes {
            let run = try SetupRootRun(Self.ours, fixture: fixture, commandLine: commandLine, config: config, staging: staging, sysroot: refusal.sysroot)
            #expect(run.status == 1, "\(label): \(run.stderr)")
            let lines = run.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].hasPrefix("Error: "), "\(label): \(run.stderr)")
            expectNothingLeft(run, label)
            if let theirStatus { #expect(run.status == theirStatus, "\(label): the reference exits \(theirStatus)") }
        }
    }

    /// In a secure repository (fs-verity on meta.json and the objects) the kernel's digest of
    /// the image must be the argument's: an image swapped for another is refused.
    @Test(.enabled(if: MountEnvironment.supportsVerity(at: NSTemporaryDirectory()), "this kernel or /tmp has no fs-verity"))
    func digestMismatch() throws {
        let fixture = try SetupRootFixture(secure: true)
        let secure = "composefs.digest=v1-sha512-12:" + fixture.hex
        let run = try SetupRootRun(Self.ours, fixture: fixture, commandLine: secure)
        #expect(run.status == 0, "\(run.stderr)")
        // Another image (a changed tree) under this one's name.
        try Data("changed\n".utf8).write(to: URL(fileURLWithPath: fixture.source + "/usr/share/doc/readme"))
        let other = try runTool("cfsctl", ["--repo", fixture.repository, "create-image", fixture.source])
        let otherHex = String(other.stdout.split(separator: "\n").first?.dropFirst("sha512:".count) ?? "")
        let link = fixture.repository + "/images/" + fixture.hex
        try FileManager.default.removeItem(atPath: link)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: try FileManager.default.destinationOfSymbolicLink(
            atPath: fixture.repository + "/images/" + otherHex))
        for (label, staging) in Self.ourModes {
            let refused = try SetupRootRun(Self.ours, fixture: fixture, commandLine: secure, staging: staging)
            #expect(refused.status == 1 && refused.stderr.contains("mismatch"), "\(label): \(refused.stderr)")
            expectNothingLeft(refused, label)
        }
    }

    @Test(.enabled(if: SharedAssets.runRSReferenceTests, SharedAssets.rsReferenceMissing))
    func usageAsTheReference() throws {
        let reference = try SharedAssets.rsTool("composefs-setup-root")
        for arguments in [["--version"], ["--help"], ["--bogus"], ["--sysroot"], ["--sysroot", "a", "--sysroot", "b"]] {
            let ours = try run(Self.ours, arguments)
            let theirs = try run(reference, arguments)
            #expect(ours.status == theirs.status, "\(arguments): ours \(ours.status), theirs \(theirs.status)")
            if arguments == ["--version"] { #expect(ours.stdout == theirs.stdout) }
        }
    }

    /// The release build is what goes into an initramfs: static, small, no Foundation.
    /// (scripts/test.sh builds it; `swift build -c release --product composefs-setup-root`.)
    @Test func releaseBinaryIsStaticAndSmall() throws {
        let path = Self.packageRoot + "/.build/release/composefs-setup-root"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            if SharedAssets.isCI { Issue.record("no release build at \(path): scripts/test.sh builds it") }
            print("skipping: no release build at \(path) (swift build -c release --product composefs-setup-root)")
            return
        }
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int ?? 0
        #expect(size > 0 && size <= 10 * 1024 * 1024, "\(size) bytes")
        let ldd = try run("/usr/bin/ldd", [path])
        #expect((ldd.stdout + ldd.stderr).contains("not a dynamic executable"), "\(ldd.stdout)\(ldd.stderr)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        // Type names of Foundation's modules (the runtime itself only names Foundation.__SwiftValue).
        for module in ["10Foundation", "FoundationEssentials"] {
            #expect(bytes.range(of: Data(module.utf8)) == nil, "\(module) is linked in")
        }
        let version = try run(path, ["--version"])
        #expect(version.status == 0 && version.stdout == "composefs-setup-root 0.9.0\n")
        let fixture = try SetupRootFixture()
        let booted = try SetupRootRun(path, fixture: fixture)
        let expected = try fixture.sourceListing()
        #expect(booted.status == 0 && booted.tree == expected, "\(booted.stderr)")
    }

    @Test func packagingInstalls() throws {
        let scratch = try TemporaryDirectory()
        let installed = try run(Self.packageRoot + "/scripts/install-boot-support.sh", ["--binary", Self.ours, scratch.url.path])
        #expect(installed.status == 0, "\(installed.stderr)")
        let destination = scratch.url.path
        for path in [
            "usr/bin/composefs-setup-root", "usr/lib/dracut/modules.d/37composefs/module-setup.sh",
            "usr/lib/dracut/modules.d/37composefs/composefs-setup-root.service", "usr/lib/initcpio/hooks/composefs",
            "usr/lib/initcpio/install/composefs", "usr/lib/kernel/install.conf.d/37composefs.conf",
        ] {
            #expect(FileManager.default.fileExists(atPath: destination + "/" + path), "\(path)")
        }
        let unit = file(destination + "/usr/lib/dracut/modules.d/37composefs/composefs-setup-root.service") ?? ""
        for line in ["After=sysroot.mount", "Before=initrd-root-fs.target", "OnFailure=emergency.target", "ExecStart=/usr/bin/composefs-setup-root"] {
            #expect(unit.split(separator: "\n").contains { $0.hasPrefix(line) }, "\(line)")
        }
        for script in ["usr/lib/dracut/modules.d/37composefs/module-setup.sh", "usr/lib/initcpio/install/composefs"] {
            #expect(try run("/bin/bash", ["-n", destination + "/" + script]).status == 0, "\(script)")
        }
        #expect(try run("/bin/sh", ["-n", destination + "/usr/lib/initcpio/hooks/composefs"]).status == 0)
        #expect(file(destination + "/usr/lib/kernel/install.conf.d/37composefs.conf")?.contains("layout = bls") == true)
    }
}
