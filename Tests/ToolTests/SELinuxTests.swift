// SELinux labels of bootable images against composefs-rs 0.9's cfsctl (../shared/reference):
// trees carrying Debian's real policy (selinux-policy-default, compiled by semodule from the
// .debs scripts/test.sh downloads, never installed) give the same ids, kernel arguments and
// dumpfiles; small hand-made policies give the same errors, whether the policy is read on
// disk (compute-id) or in the tree (create-image); an OCI image carrying a policy is labelled
// on a bootable pull.

import CComposeFSSys
import Foundation
import Testing
import TestSupport

/// Debian's selinux-policy-default, compiled once (semodule from policycoreutils, both from
/// their .debs, run on a private root) and kept beside the .debs.
enum DebianSELinuxPolicy {
    static let debs = "/var/tmp/composefs-test-debs"

    static func deb(_ package: String) -> String? {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: debs)) ?? []
        return names.sorted().last { $0.hasPrefix(package + "_") && $0.hasSuffix(".deb") }.map { debs + "/" + $0 }
    }

    static var available: Bool { deb("selinux-policy-default") != nil && deb("policycoreutils") != nil }

    /// Whether the tests of the real policy run: the .debs are there, or this is CI (where their
    /// absence is an error).
    static var runTests: Bool { available || SharedAssets.isCI }

    static let missing: Comment = "the selinux-policy-default and policycoreutils .debs are not in \(debs) (scripts/test.sh downloads them)"

    struct Unavailable: Error, CustomStringConvertible { var description: String }

    /// etc/selinux with the compiled policy ("default"), built on first use.
    static let etcSELinux: Result<String, Unavailable> = {
        do { return .success(try build()) } catch let error as Unavailable { return .failure(error) } catch {
            return .failure(Unavailable(description: "\(error)"))
        }
    }()

    static func path() throws -> String { try etcSELinux.get() }

    private static func build() throws -> String {
        guard let policyDeb = deb("selinux-policy-default"), let toolsDeb = deb("policycoreutils") else {
            throw Unavailable(description: "\(missing)")
        }
        let name = URL(fileURLWithPath: policyDeb).deletingPathExtension().lastPathComponent
        let cache = debs + "/compiled-" + name
        if FileManager.default.fileExists(atPath: cache + "/etc/selinux/default/contexts/files/file_contexts") {
            return cache + "/etc/selinux"
        }
        let work = debs + "/build-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: work) }
        let root = work + "/root"
        try FileManager.default.createDirectory(atPath: root + "/etc/selinux", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/var/lib/selinux", withIntermediateDirectories: true)
        for (deb, directory) in [(policyDeb, work + "/policy"), (toolsDeb, work + "/tools")] {
            let extracted = try run("/usr/bin/dpkg-deb", ["-x", deb, directory])
            guard extracted.status == 0 else { throw Unavailable(description: "dpkg-deb -x \(deb): \(extracted.stderr)") }
        }
        let copied = try run("/bin/cp", ["-a", work + "/policy/etc/selinux/default", root + "/etc/selinux/"])
        guard copied.status == 0 else { throw Unavailable(description: "cp: \(copied.stderr)") }
        // libsemanage with the tools of the extracted policycoreutils, and no file_contexts.bin.
        try """
            module-store = direct
            expand-check=0
            compiler-directory = \(work)/tools/usr/libexec/selinux/hll
            [setfiles]
            path = \(work)/tools/sbin/setfiles
            args = -q -c $@ $<
            [end]
            [sefcontext_compile]
            path = /bin/true
            args = $@
            [end]

            """.write(toFile: root + "/etc/selinux/semanage.conf", atomically: true, encoding: .utf8)
        try "SELINUX=permissive\nSELINUXTYPE=default\n".write(toFile: root + "/etc/selinux/config", atomically: true, encoding: .utf8)
        let modules = try String(contentsOfFile: work + "/policy/usr/share/selinux/default/.modules", encoding: .utf8)
            .split(whereSeparator: \.isWhitespace)
        let installed = try run(
            work + "/tools/usr/sbin/semodule",
            ["-p", root, "-X", "100", "-n", "-s", "default"] + modules.map { "-i\(work)/policy/usr/share/selinux/default/\($0).pp.bz2" })
        guard installed.status == 0, FileManager.default.fileExists(atPath: root + "/etc/selinux/default/contexts/files/file_contexts")
        else {
            throw Unavailable(description: "semodule could not compile the policy: \(installed.stderr.suffix(2000))")
        }
        try FileManager.default.removeItem(atPath: root + "/etc/selinux/semanage.conf")
        try FileManager.default.createDirectory(atPath: work + "/cache", withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: root + "/etc", toPath: work + "/cache/etc")
        // Another test process may have got there first: either copy will do.
        if rename(work + "/cache", cache) != 0 && !FileManager.default.fileExists(atPath: cache + "/etc/selinux") {
            throw Unavailable(description: "cannot keep the compiled policy in \(cache)")
        }
        return cache + "/etc/selinux"
    }
}

@Suite(.serialized, .enabled(if: SharedAssets.runRSReferenceTests, SharedAssets.rsReferenceMissing))
struct SELinuxTests {
    static func reference(_ arguments: [String]) throws -> ProcessResult {
        try run(try SharedAssets.rsTool("cfsctl"), arguments)
    }

    /// Both tools' results for the same arguments, which must be the same.
    static func expectSame(_ arguments: [String], _ what: String = "", sourceLocation: SourceLocation = #_sourceLocation) throws {
        let ours = try runTool("cfsctl", arguments)
        let theirs = try reference(arguments)
        #expect(
            ours.status == theirs.status && ours.stdout == theirs.stdout && ours.stderr == theirs.stderr,
            "\(what) \(arguments):\nours (\(ours.status)): \(ours.stdout.prefix(300)) \(ours.stderr)\ntheirs (\(theirs.status)): \(theirs.stdout.prefix(300)) \(theirs.stderr)",
            sourceLocation: sourceLocation)
    }

    /// create-image --bootable in a new repository of each tool: the same id, or the same error.
    static func expectSameImage(_ tree: String, _ what: String = "", sourceLocation: SourceLocation = #_sourceLocation) throws {
        let work = try TemporaryDirectory()
        var results: [ProcessResult] = []
        for (name, tool) in [("ours", { try runTool("cfsctl", $0) }), ("theirs", { try reference($0) })] as [(String, ([String]) throws -> ProcessResult)] {
            let repo = work.url.path + "/" + name
            let initialized = try tool(["--repo", repo, "init", "--insecure"])
            #expect(initialized.status == 0, "\(initialized.stderr)", sourceLocation: sourceLocation)
            results.append(try tool(["--insecure", "--repo", repo, "create-image", "--bootable", tree]))
        }
        #expect(
            results[0].status == results[1].status && results[0].stdout == results[1].stdout && results[0].stderr == results[1].stderr,
            "\(what) create-image --bootable \(tree):\nours (\(results[0].status)): \(results[0].stdout) \(results[0].stderr)\ntheirs (\(results[1].status)): \(results[1].stdout) \(results[1].stderr)",
            sourceLocation: sourceLocation)
    }

    static func write(_ path: String, _ text: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    static func makeDirectories(_ root: String, _ paths: [String]) throws {
        for path in paths { try FileManager.default.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true) }
    }

    /// A bootable tree with every kind of file on paths the Debian policy gives different labels:
    /// aliases of file_contexts.subs_dist, `<<none>>` paths, type-specific entries, home
    /// directories, overrides in a file_contexts.local, hard links across labels, odd names;
    /// and, to have many real-world paths, the names (not the content) of /usr/lib/systemd and
    /// /usr/share/doc.
    static func makeTree(at root: String, policy: String) throws {
        try makeDirectories(root, [
            "usr/bin", "usr/sbin", "usr/lib/systemd/system", "usr/lib/x86_64-linux-gnu", "usr/libexec", "usr/share/doc/a",
            "usr/local/lib64", "boot/efi", "sysroot/ostree", "etc/ssh", "var/log/journal", "var/lib/private/s", "var/spool/mail",
            "var/cache/private", "home/user/.ssh", "root", "tmp/t", "dev/pts", "mnt/m", "opt/special/x", "lib64", "srv", "run/lock",
        ])
        let copied = try run("/bin/cp", ["-a", policy, root + "/etc/"])
        #expect(copied.status == 0, "\(copied.stderr)")
        try write(root + "/etc/selinux/default/contexts/files/file_contexts.local", """
            /usr/bin/overridden\t--\tsystem_u:object_r:etc_t:s0
            /opt/special(/.*)?\tsystem_u:object_r:tmp_t:s0
            /srv/none\t<<none>>

            """)
        for file in [
            "usr/bin/true", "usr/bin/overridden", "usr/sbin/sshd", "usr/lib/systemd/systemd", "usr/lib/systemd/system/a.service",
            "usr/lib/x86_64-linux-gnu/libc.so.6", "usr/libexec/helper", "usr/share/doc/a/README", "usr/local/lib64/l.so",
            "boot/vmlinuz", "sysroot/ostree/x", "etc/ssh/sshd_config", "etc/shadow", "var/log/messages", "var/lib/private/s/db",
            "var/spool/mail/root", "var/cache/private/c", "home/user/.ssh/authorized_keys", "home/user/.bashrc", "root/.profile",
            "tmp/t/x", "mnt/m/f", "opt/special/x/f", "lib64/ld-linux-x86-64.so.2", "srv/none", "srv/www",
            "usr/share/doc/a/new\nline", "usr/share/doc/a/\u{E9}t\u{E9}",
        ] {
            try write(root + "/" + file, "content of \(file)\n")
        }
        try write(root + "/usr/bin/big", String(repeating: "binary ", count: 2000))
        #expect(symlink("usr/bin", root + "/bin") == 0)
        #expect(symlink("usr/lib", root + "/lib") == 0)
        #expect(symlink("../run", root + "/var/run") == 0)
        #expect(symlink("/dev/null", root + "/usr/lib/systemd/system/masked.service") == 0)
        #expect(symlink("x", root + "/mnt/link") == 0)
        // Hard links whose names get different labels (and one that gets none).
        for name in ["usr/sbin/big-link", "etc/big-link", "var/log/big-link", "tmp/big-link", "usr/bin/big-link"] {
            #expect(link(root + "/usr/bin/big", root + "/" + name) == 0)
        }
        #expect(link(root + "/etc/shadow", root + "/etc/shadow-") == 0)
        #expect(mkfifo(root + "/dev/initctl", 0o600) == 0)
        #expect(mkfifo(root + "/var/log/fifo", 0o600) == 0)
        if geteuid() == 0 {
            #expect(mknod(root + "/dev/null", S_IFCHR | 0o666, dev_t((1 << 8) | 3)) == 0)
            #expect(mknod(root + "/dev/sda", S_IFBLK | 0o660, dev_t(8 << 8)) == 0)
            #expect(mknod(root + "/dev/pts/0", S_IFCHR | 0o620, dev_t(136 << 8)) == 0)
            // A file with a label it must lose or change.
            #expect(cfs_lsetxattr(root + "/usr/bin/true", "security.selinux", "stale_t", 7) == 0)
        }
        let socket = try run("/usr/bin/python3", ["-c", "import socket; socket.socket(socket.AF_UNIX).bind('\(root)/dev/log')"])
        #expect(socket.status == 0, "\(socket.stderr)")
        for source in ["/usr/lib/systemd", "/usr/share/doc"] { try mirrorNames(of: source, into: root + source) }
    }

    /// The directories, empty files and symlinks of `source`, at most a few thousand.
    static func mirrorNames(of source: String, into target: String) throws {
        guard let walker = FileManager.default.enumerator(atPath: source) else { return }
        var count = 0
        while let relative = walker.nextObject() as? String, count < 4000 {
            let from = source + "/" + relative
            let to = target + "/" + relative
            guard let type = (try? FileManager.default.attributesOfItem(atPath: from))?[.type] as? FileAttributeType,
                !FileManager.default.fileExists(atPath: to)
            else { continue }
            switch type {
            case .typeDirectory: try FileManager.default.createDirectory(atPath: to, withIntermediateDirectories: true)
            case .typeSymbolicLink: _ = symlink(try FileManager.default.destinationOfSymbolicLink(atPath: from), to)
            case .typeRegular: _ = FileManager.default.createFile(atPath: to, contents: nil)
            default: continue
            }
            count += 1
        }
    }

    @Test(.enabled(if: DebianSELinuxPolicy.runTests, DebianSELinuxPolicy.missing))
    func debianPolicyGivesComposefsRSIds() throws {
        let policy = try DebianSELinuxPolicy.path()
        let work = try TemporaryDirectory()
        let tree = work.url.path + "/tree"
        try Self.makeTree(at: tree, policy: policy)
        try Self.expectSame(["--no-repo", "compute-id", "--bootable", tree])
        try Self.expectSame(["--no-repo", "--hash", "sha512", "compute-id", "--bootable", tree])
        try Self.expectSame(["--no-repo", "--hash", "sha256", "--erofs-version", "2", "compute-id", "--bootable", tree])
        try Self.expectSame(["--no-repo", "--erofs-version", "0", "compute-id", "--bootable", "--no-propagate-usr-to-root", tree])
        try Self.expectSame(["--no-repo", "compute-id", "--bootable", "--xattrs", "keep-user-xattrs", tree])
        try Self.expectSame(["--no-repo", "compute-karg", tree])
        try Self.expectSame(["--no-repo", "create-dumpfile", "--bootable", tree])
        try Self.expectSameImage(tree)

        // The labels are the policy's: not all the same, none with a NUL, hard links split.
        let dump = try runTool("cfsctl", ["--no-repo", "create-dumpfile", "--bootable", tree]).stdout
        func line(_ path: String) -> Substring? { dump.split(separator: "\n").first { $0.hasPrefix(path + " ") } }
        #expect(line("/usr/bin/true")?.hasSuffix("security.selinux=system_u:object_r:bin_t:s0") == true)
        #expect(line("/lib64/ld-linux-x86-64.so.2")?.contains("ld_so_t") == true)
        #expect(line("/usr/bin/overridden")?.contains("security.selinux=system_u:object_r:etc_t:s0") == true)
        #expect(line("/tmp/t/x")?.contains("security.selinux") == false)
        #expect(line("/etc/big-link")?.contains("etc_t") == true)
        #expect(line("/var/log/big-link")?.contains("var_log_t") == true)
        #expect(line("/dev/null")?.contains("null_device_t") == true)
        #expect(!dump.contains("\\x00 ") && !dump.contains("stale_t"))
    }

    /// A tree with a policy of type "t" made of `files` (names under contexts/files).
    static func policyTree(_ root: String, _ files: [String: String], config: String = "SELINUXTYPE=t\n") throws {
        try makeDirectories(root, ["usr/bin", "boot", "sysroot", "etc/selinux/t/contexts/files"])
        try write(root + "/usr/bin/f", "f\n")
        try write(root + "/etc/selinux/config", config)
        for (name, content) in files { try write(root + "/etc/selinux/t/contexts/files/" + name, content) }
    }

    static let simplePolicy = "/.*\tu:r:default:s0\n/usr/bin(/.*)?\tu:r:bin:s0\n"

    /// Trees with a policy composefs-rs labels or refuses, each set up by a closure on its root.
    static let policyCases: [(String, @Sendable (String) throws -> Void)] = [
        ("no policy", { root in try makeDirectories(root, ["usr", "boot", "sysroot", "etc/selinux"]) }),
        ("config names none", { root in try policyTree(root, ["file_contexts": simplePolicy], config: "SELINUX=disabled\n") }),
        ("labelled", { root in try policyTree(root, ["file_contexts": simplePolicy]) }),
        ("etc/selinux a file", { root in
            try makeDirectories(root, ["usr", "boot", "sysroot", "etc"])
            try write(root + "/etc/selinux", "")
        }),
        ("config a directory", { root in try makeDirectories(root, ["usr", "boot", "sysroot", "etc/selinux/config"]) }),
        ("missing type", { root in try policyTree(root, ["file_contexts": simplePolicy], config: "SELINUXTYPE=x\n") }),
        ("relative type", { root in try policyTree(root, ["file_contexts": simplePolicy], config: "SELINUXTYPE=./t\n") }),
        ("nested type", { root in try policyTree(root, ["file_contexts": simplePolicy], config: "SELINUXTYPE=t/contexts/..\n") }),
        ("no file_contexts", { root in try policyTree(root, ["file_contexts.local": simplePolicy]) }),
        ("file_contexts a directory", { root in
            try policyTree(root, [:])
            try makeDirectories(root, ["etc/selinux/t/contexts/files/file_contexts"])
        }),
        ("file_contexts a symlink", { root in
            try policyTree(root, ["real": simplePolicy])
            #expect(symlink("real", root + "/etc/selinux/t/contexts/files/file_contexts") == 0)
        }),
        ("etc/selinux a symlink", { root in
            try policyTree(root, ["file_contexts": simplePolicy])
            #expect(rename(root + "/etc/selinux", root + "/etc/policy") == 0)
            #expect(symlink("policy", root + "/etc/selinux") == 0)
        }),
        ("bad type code", { root in try policyTree(root, ["file_contexts": simplePolicy + "/x\t-x\tu:r:x:s0\n"]) }),
        ("missing context", { root in try policyTree(root, ["file_contexts": "# c\n\n/x\t-d\n"]) }),
        ("missing separator", { root in try policyTree(root, ["file_contexts": "/x\n"]) }),
        ("trailing data", { root in try policyTree(root, ["file_contexts": "/x a b\n"]) }),
        ("not UTF-8", { root in
            try policyTree(root, ["file_contexts": simplePolicy])
            try Data([0x2F, 0xFF, 0x20, 0x61, 0x0A]).write(to: URL(fileURLWithPath: root + "/etc/selinux/t/contexts/files/file_contexts.homedirs"))
        }),
        ("bad .local", { root in try policyTree(root, ["file_contexts": simplePolicy, "file_contexts.local": "/a -z b\n"]) }),
        ("bad .subs", { root in try policyTree(root, ["file_contexts": simplePolicy, "file_contexts.subs": "/a /b\n/c\n"]) }),
        ("bad .subs_dist", { root in try policyTree(root, ["file_contexts": simplePolicy, "file_contexts.subs_dist": "/a /b /c\n"]) }),
        ("PCRE2 refuses", { root in try policyTree(root, ["file_contexts": simplePolicy + "/usr/[b\tu:r:x:s0\n"]) }),
        ("PCRE2 takes", { root in
            try policyTree(root, ["file_contexts": simplePolicy + "/usr/bin/(?!g).*\tu:r:look:s0\n/usr/(?=b)bin\tu:r:ahead:s0\n"])
        }),
        ("Unicode word boundary", { root in try policyTree(root, ["file_contexts": simplePolicy + "/usr(?u:\\b)\tu:r:x:s0\n"]) }),
        ("aliases and none", { root in
            try policyTree(root, [
                "file_contexts": simplePolicy + "/opt/bin/f\t<<none>>\n/usr/bin/x\tu:r:x:s0\n", "file_contexts.subs": "/opt /usr\n# c\n",
                "file_contexts.subs_dist": "/opt /usr\n/usr/bin /opt\n/srv /usr/bin/\n",
            ])
            try write(root + "/opt/bin/f", "f\n")
            try write(root + "/srv/x", "x\n")
        }),
    ]

    /// Each non-directory's path, nlink and label, and each directory's path and label, from a dumpfile.
    static func labels(_ dumpfile: String) -> [String] {
        dumpfile.split(separator: "\n").map { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            let label = fields.first { $0.hasPrefix("security.selinux=") } ?? "-"
            let nlink = fields.count > 3 && !fields[2].hasPrefix("4") ? fields[3] : ""
            return "\(fields[0]) \(nlink) \(label)"
        }
    }

    /// An OCI image of `tree` (one layer), pulled bootable into a new repository; the result
    /// of the pull, and of `oci dump --bootable` after it.
    static func pullBootable(_ tree: String, in work: String) throws -> (pull: ProcessResult, dump: ProcessResult) {
        let tar = try run("/bin/tar", ["--format=posix", "--numeric-owner", "-C", tree, "-cf", work + "/layer.tar", "."])
        #expect(tar.status == 0, "\(tar.stderr)")
        let image = try run("/usr/bin/python3", [scriptsDirectory() + "/make-oci-image.py", work + "/layout", "--layer-tar", work + "/layer.tar"])
        #expect(image.status == 0, "\(image.stderr)")
        let repo = work + "/repo"
        #expect(try runTool("cfsctl", ["--repo", repo, "init", "--insecure"]).status == 0)
        let pull = try runTool("cfsctl", ["--insecure", "--repo", repo, "oci", "pull", "--bootable", "oci:\(work)/layout:test", "t"])
        return (pull, try runTool("cfsctl", ["--insecure", "--repo", repo, "oci", "dump", "--bootable", "t"]))
    }

    @Test func ociImagesAreLabelledFromTheirOwnPolicy() throws {
        let work = try TemporaryDirectory()
        let tree = work.url.path + "/tree"
        // A file_contexts long enough to be stored as an object, not inline.
        try Self.policyTree(tree, [
            "file_contexts": Self.simplePolicy + "/etc(/.*)?\tu:r:etc:s0\n/var/log(/.*)?\tu:r:log:s0\n/tmp/.*\t<<none>>\n/dev/f\t-p\tu:r:fifo:s0\n",
            "file_contexts.subs_dist": "/lib /usr/bin\n",
        ])
        try Self.makeDirectories(tree, ["var/log", "tmp", "dev", "lib"])
        try Self.write(tree + "/lib/x", "x\n")
        for name in ["etc/f-link", "var/log/f-link", "tmp/f-link", "usr/bin/f-link"] { #expect(link(tree + "/usr/bin/f", tree + "/" + name) == 0) }
        #expect(symlink("f", tree + "/usr/bin/s") == 0)
        #expect(mkfifo(tree + "/dev/f", 0o600) == 0)
        let (pull, dump) = try Self.pullBootable(tree, in: work.url.path)
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(dump.status == 0, "\(dump.stderr)")
        let reference = try Self.reference(["--no-repo", "create-dumpfile", "--bootable", tree])
        #expect(reference.status == 0, "\(reference.stderr)")
        #expect(Self.labels(dump.stdout) == Self.labels(reference.stdout))
        #expect(dump.stdout.contains("security.selinux=u:r:log:s0"))

        // A policy file the tree cannot give is composefs-rs's error, as create-image reports it.
        let linked = work.url.path + "/linked"
        try Self.policyTree(linked, ["real": Self.simplePolicy])
        #expect(symlink("real", linked + "/etc/selinux/t/contexts/files/file_contexts") == 0)
        try FileManager.default.createDirectory(atPath: work.url.path + "/second", withIntermediateDirectories: true)
        let refused = try Self.pullBootable(linked, in: work.url.path + "/second").pull
        #expect(refused.status == 1)
        #expect(refused.stderr.hasSuffix("Caused by:\n    0: Building SELinux policy\n    1: Directory entry \"file_contexts\" is not a regular file\n"), "\(refused.stderr)")
    }

    @Test func policyFilesAsComposefsRSReadsThem() throws {
        for (name, setUp) in Self.policyCases {
            let work = try TemporaryDirectory()
            let tree = work.url.path + "/tree"
            try setUp(tree)
            try Self.expectSame(["--no-repo", "compute-id", "--bootable", tree], name)
            try Self.expectSame(["--no-repo", "create-dumpfile", "--bootable", "--no-propagate-usr-to-root", tree], name)
            try Self.expectSameImage(tree, name)
        }
    }
}
