// End-to-end tests of `cfsctl prepare-boot DIRECTORY` and `cfsctl oci prepare-boot`: what lands in
// the boot directory, file by file (names, contents, modes), the state directories, and the
// refusals (a UKI naming another image, arguments for a UKI, no kernel) leaving nothing there.
// The reference cfsctl has no `oci` commands: expectations follow composefs-rs 0.9's sources.

import Foundation
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized) struct PrepareBootTests {
    let work = try! TemporaryDirectory()
    var base: String { work.url.path }
    var repo: String { base + "/sysroot/composefs" }
    var bootdir: String { base + "/efi" }
    /// Where 0.9 puts state: beside the repository given with --repo.
    var state: String { base + "/sysroot/state/deploy" }

    static let fileMode: String = String(0o666 & ~processUmask, radix: 8)
    static let directoryMode: String = String(0o777 & ~processUmask, radix: 8)
    static let processUmask: mode_t = {
        let mask = umask(0o022)
        umask(mask)
        return mask
    }()

    init() throws {
        let result = try runTool("cfsctl", ["--repo", base + "/sysroot/composefs", "init", "--insecure"])
        #expect(result.status == 0, "\(result.stderr)")
    }

    func cfsctl(_ arguments: [String]) throws -> ProcessResult { try runTool("cfsctl", ["--repo", repo] + arguments) }

    /// "d PATH MODE" and "f PATH MODE CONTENT" for everything below `root`, sorted.
    func snapshot(_ root: String) throws -> [String] {
        guard FileManager.default.fileExists(atPath: root) else { return [] }
        return try FileManager.default.subpathsOfDirectory(atPath: root).sorted().map { name in
            let path = root + "/" + name
            var info = stat()
            try #require(lstat(path, &info) == 0)
            let mode = String(info.st_mode & 0o7777, radix: 8)
            if (info.st_mode & S_IFMT) == S_IFDIR { return "d \(name) \(mode)" }
            return "f \(name) \(mode) " + String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self)
        }
    }

    func write(_ path: String, _ content: String) throws { try write(path, Array(content.utf8)) }

    func write(_ path: String, _ content: [UInt8]) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(content).write(to: URL(fileURLWithPath: path))
    }

    /// A root file system: /usr, an empty /sysroot and /boot (which bootable images need).
    func makeRoot(_ name: String) throws -> String {
        let root = base + "/" + name
        try write(root + "/usr/bin/tool", "#!/bin/sh\n")
        try write(root + "/etc/hostname", "test\n")
        for directory in ["boot", "sysroot"] {
            try FileManager.default.createDirectory(atPath: root + "/" + directory, withIntermediateDirectories: true)
        }
        return root
    }

    /// The kernel argument `prepare-boot` must write for `root` (insecure repository, SHA-512, V1).
    func expectedArgument(_ root: String) throws -> String {
        let result = try runTool("cfsctl", ["--no-repo", "--insecure", "--hash", "sha512", "compute-karg", root])
        #expect(result.status == 0, "\(result.stderr)")
        return result.stdout.trimmingCharacters(in: .newlines)
    }

    func setWholeSecondMtime(_ path: String) throws {
        var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 0), timespec(tv_sec: 1_700_000_000, tv_nsec: 0)]
        try #require(utimensat(AT_FDCWD, path, &times, 0) == 0)
    }

    func digest(of argument: String) -> String { String(argument.split(separator: ":").last ?? "") }

    func expectState(_ argument: String) throws {
        let hex = digest(of: argument)
        let d = Self.directoryMode
        #expect(
            try snapshot(state) == [
                "d \(hex) \(d)", "d \(hex)/etc \(d)", "d \(hex)/etc/upper \(d)", "d \(hex)/etc/work \(d)", "d \(hex)/var \(d)",
            ])
    }

    @Test func type1EntriesFromBootLoaderEntries() throws {
        let root = try makeRoot("type1")
        let kernel = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try write(root + "/boot/vmlinuz-6.1.0-13-amd64", kernel)
        try write(root + "/boot/initrd.img-6.1.0-13-amd64", "INITRD")
        try write(
            root + "/boot/loader/entries/debian-6.1.0-13-amd64.conf",
            "title Debian GNU/Linux 12\nversion 6.1.0-13-amd64\nlinux /boot/vmlinuz-6.1.0-13-amd64\n"
                + "initrd /boot/initrd.img-6.1.0-13-amd64\noptions root=/dev/vda2 ro composefs=stale\n")
        let argument = try expectedArgument(root)
        let result = try cfsctl([
            "prepare-boot", "--bootdir", bootdir, "--entry-id", "example", "--cmdline", "rw", "--cmdline", "console=ttyS0 quiet", root, "deb",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == argument + "\n")
        let (f, d) = (Self.fileMode, Self.directoryMode)
        let listing = try snapshot(bootdir)
        #expect(
            listing.filter { !$0.hasPrefix("f example/vmlinuz") } == [
                "d example \(d)",
                "f example/initrd.img-6.1.0-13-amd64 \(f) INITRD",
                "d loader \(d)",
                "d loader/entries \(d)",
                "f loader/entries/example.conf \(f) title Debian GNU/Linux 12\nversion 6.1.0-13-amd64\n"
                    + "linux /example/vmlinuz-6.1.0-13-amd64\ninitrd /example/initrd.img-6.1.0-13-amd64\n"
                    + "options root=/dev/vda2 ro \(argument) rw console=ttyS0 quiet\n",
            ])
        #expect(listing.contains { $0.hasPrefix("f example/vmlinuz-6.1.0-13-amd64 \(f) ") })
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: bootdir + "/example/vmlinuz-6.1.0-13-amd64"))) == kernel)
        try expectState(argument)
        // The image is stored, named as asked; without /boot (the boot transform emptied it).
        let stored = try FileManager.default.destinationOfSymbolicLink(atPath: repo + "/images/refs/deb")
        #expect(stored.hasSuffix(digest(of: argument)))
        let listed = try cfsctl(["dump-files", "deb", "/boot"])
        #expect(listed.status == 0 && !listed.stdout.contains("vmlinuz"), "\(listed.stdout)\(listed.stderr)")

        // Without an entry id, the files keep the paths the entry names; the argument replaces itself.
        try FileManager.default.removeItem(atPath: bootdir)
        let again = try cfsctl(["prepare-boot", "--bootdir", bootdir, root])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(
            try snapshot(bootdir).filter { !$0.hasPrefix("f boot/vmlinuz") } == [
                "d boot \(d)", "f boot/initrd.img-6.1.0-13-amd64 \(f) INITRD", "d loader \(d)", "d loader/entries \(d)",
                "f loader/entries/debian-6.1.0-13-amd64.conf \(f) title Debian GNU/Linux 12\nversion 6.1.0-13-amd64\n"
                    + "linux /boot/vmlinuz-6.1.0-13-amd64\ninitrd /boot/initrd.img-6.1.0-13-amd64\noptions root=/dev/vda2 ro \(argument)\n",
            ])
    }

    @Test func type1EntriesFromUsrLibModules() throws {
        let root = try makeRoot("modules")
        try write(root + "/usr/lib/modules/6.1.0-13-amd64/vmlinuz", "KERNEL")
        try write(root + "/usr/lib/modules/6.1.0-13-amd64/initramfs.img", "INITRAMFS")
        try write(root + "/usr/lib/modules/6.1.0-13-amd64/kernel/fs/erofs.ko", "module")
        try write(root + "/usr/lib/os-release", "ID=debian\n")
        let argument = try expectedArgument(root)
        let result = try cfsctl(["prepare-boot", "--bootdir", bootdir, "--cmdline", "rw", root])
        #expect(result.status == 0, "\(result.stderr)")
        let (f, d) = (Self.fileMode, Self.directoryMode)
        #expect(
            try snapshot(bootdir) == [
                "d 6.1.0-13-amd64 \(d)", "f 6.1.0-13-amd64/initramfs.img \(f) INITRAMFS", "f 6.1.0-13-amd64/vmlinuz \(f) KERNEL",
                "d loader \(d)", "d loader/entries \(d)",
                "f loader/entries/6.1.0-13-amd64.conf \(f) # File created by composefs\ntitle todoOS\nversion 0-todo\n"
                    + "linux /6.1.0-13-amd64/vmlinuz\ninitrd /6.1.0-13-amd64/initramfs.img\noptions \(argument) rw\n",
            ])
        try expectState(argument)
    }

    @Test(.enabled(if: UKIBuilder.available, "needs objcopy and systemd's EFI stub"))
    func ukisAreCopiedByteForByte() throws {
        let root = try makeRoot("uki")
        // /boot is emptied in the image, so the UKI can name the image it is in (the boot
        // transform keeps /boot's mtime nanoseconds: keep them as they were).
        try setWholeSecondMtime(root + "/boot")
        let argument = try expectedArgument(root)
        let sealed = argument.replacingOccurrences(of: "=?", with: "=")
        try UKIBuilder.build(commandLine: sealed + " rw quiet", to: root + "/boot/EFI/Linux/os.efi")
        try FileManager.default.createDirectory(atPath: root + "/boot/EFI/Linux/os.efi.extra.d", withIntermediateDirectories: true)
        try UKIBuilder.build([(".cmdline", Array("console=ttyS0".utf8))], to: root + "/boot/EFI/Linux/os.efi.extra.d/serial.addon.efi")
        try setWholeSecondMtime(root + "/boot")
        #expect(try expectedArgument(root) == argument)
        let uki = try Data(contentsOf: URL(fileURLWithPath: root + "/boot/EFI/Linux/os.efi"))

        // Arguments cannot be added to a UKI: nothing is written.
        let refused = try cfsctl(["prepare-boot", "--bootdir", bootdir, "--cmdline", "rw", root])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("UKI /boot/EFI/Linux/os.efi: --cmdline arguments cannot be added to a UKI"), "\(refused.stderr)")
        #expect(try snapshot(bootdir) == [] && snapshot(state) == [])

        let result = try cfsctl(["prepare-boot", "--bootdir", bootdir, root])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout == argument + "\n")
        let d = Self.directoryMode
        // The first entry only, as composefs-rs 0.9: the addon is not written.
        #expect(
            try snapshot(bootdir).map { $0.split(separator: " ").prefix(3).joined(separator: " ") }
                == ["d EFI \(d)", "d EFI/Linux \(d)", "f EFI/Linux/os.efi \(Self.fileMode)"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: bootdir + "/EFI/Linux/os.efi")) == uki)
        try expectState(argument)

        let renamed = try cfsctl(["prepare-boot", "--bootdir", bootdir, "--entry-id", "example", root])
        #expect(renamed.status == 0, "\(renamed.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: bootdir + "/EFI/Linux/example.efi")) == uki)
    }

    @Test(.enabled(if: UKIBuilder.available, "needs objcopy and systemd's EFI stub"))
    func ukisNamingAnotherImageAreRefused() throws {
        let other = String(repeating: "ab", count: 64)
        let root = try makeRoot("other")
        try UKIBuilder.build(commandLine: "composefs.digest=v1-sha512-12:\(other)", to: root + "/boot/EFI/Linux/os.efi")
        let argument = try expectedArgument(root)
        let result = try cfsctl(["prepare-boot", "--bootdir", bootdir, root])
        #expect(result.status != 0)
        #expect(
            result.stderr.contains(
                "UKI /boot/EFI/Linux/os.efi: its .cmdline names the composefs image sha512:\(other), not this one (sha512:\(digest(of: argument)))"),
            "\(result.stderr)")
        #expect(try snapshot(bootdir) == [] && snapshot(state) == [])

        // A UKI in /usr/lib/modules/KVER/ is part of the image: it cannot name it.
        let modules = try makeRoot("modules-uki")
        let own = try expectedArgument(modules)
        try UKIBuilder.build(commandLine: own, to: modules + "/usr/lib/modules/6.1.0/6.1.0.efi")
        let inside = try cfsctl(["prepare-boot", "--bootdir", bootdir, modules])
        #expect(inside.status != 0)
        #expect(inside.stderr.contains("UKI /usr/lib/modules/6.1.0/6.1.0.efi: its .cmdline names the composefs image sha512:\(digest(of: own))"))
        #expect(try snapshot(bootdir) == [] && snapshot(state) == [])
    }

    @Test func badInputIsRefusedWithNothingWritten() throws {
        let root = try makeRoot("empty")
        var result = try cfsctl(["prepare-boot", "--bootdir", bootdir, root])
        #expect(result.status != 0 && result.stderr.contains("No boot entries!"), "\(result.stderr)")
        // Refused before anything is stored.
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: repo + "/images")) ?? []).filter { $0 != "refs" } == [])

        try write(root + "/usr/lib/modules/6.2/vmlinuz", "K")
        result = try cfsctl(["prepare-boot", "--bootdir", bootdir, root])
        #expect(result.status != 0 && result.stderr.contains("kernel 6.2: no initramfs.img in /usr/lib/modules/6.2"), "\(result.stderr)")

        try write(root + "/boot/loader/entries/a.conf", "linux /boot/missing\n")
        result = try cfsctl(["prepare-boot", "--bootdir", bootdir, root])
        #expect(
            result.stderr.contains("boot entry /boot/loader/entries/a.conf: linux /boot/missing: Directory entry \"missing\" does not exist"),
            "\(result.stderr)")
        for id in ["../escape", "a/b", ""] {
            result = try cfsctl(["prepare-boot", "--bootdir", bootdir, "--entry-id", id, root])
            #expect(result.status != 0 && result.stderr.contains("invalid boot entry id"), "\(result.stderr)")
        }
        #expect(try snapshot(bootdir) == [] && snapshot(state) == [])
    }

    // MARK: OCI

    /// An OCI layout of `root` as one layer, pulled and tagged `tag`.
    func pull(_ root: String, tag: String) throws {
        guard let python = findExecutable("python3"), let tar = findExecutable("tar") else {
            throw OCIFixture.SetupError(description: "python3 and tar are needed")
        }
        let layer = base + "/\(tag).tar"
        let archived = try run(tar, ["--numeric-owner", "--sort=name", "-C", root, "-cf", layer, "."])
        #expect(archived.status == 0, "\(archived.stderr)")
        let layout = base + "/layout-\(tag)"
        let made = try run(python, [scriptsDirectory() + "/make-oci-image.py", layout, "--layer-tar", layer])
        #expect(made.status == 0, "\(made.stderr)")
        let pulled = try cfsctl(["oci", "pull", "oci:\(layout):test", tag])
        #expect(pulled.status == 0, "\(pulled.stderr)")
    }

    @Test(.enabled(if: findExecutable("python3") != nil, "needs python3 (scripts/make-oci-image.py)"))
    func ociImagesWriteTheirEntry() throws {
        let root = try makeRoot("oci")
        try write(root + "/usr/lib/modules/6.1.0/vmlinuz", "KERNEL")
        try write(root + "/usr/lib/modules/6.1.0/initramfs.img", "INITRAMFS")
        // Something the boot transform drops, so the bootable image is not the pulled one.
        try write(root + "/boot/grub/grub.cfg", "")
        try pull(root, tag: "os")
        let id = try cfsctl(["oci", "compute-id", "--bootable", "os"]).stdout.trimmingCharacters(in: .newlines)
        let result = try cfsctl(["oci", "prepare-boot", "os", "--bootdir", bootdir, "--entry-id", "example", "--cmdline", "rw"])
        #expect(result.status == 0, "\(result.stderr)")
        // composefs-rs prints nothing.
        #expect(result.stdout == "")
        let argument = "composefs.digest=?v1-sha512-12:" + id
        let (f, d) = (Self.fileMode, Self.directoryMode)
        #expect(
            try snapshot(bootdir) == [
                "d example \(d)", "f example/initramfs.img \(f) INITRAMFS", "f example/vmlinuz \(f) KERNEL", "d loader \(d)",
                "d loader/entries \(d)",
                "f loader/entries/example.conf \(f) # File created by composefs\ntitle todoOS\nversion 0-todo\n"
                    + "linux /example/vmlinuz\ninitrd /example/initramfs.img\noptions \(argument) rw\n",
            ])
        try expectState(argument)
        // The image is named by nothing: gc takes it (and only it).
        #expect(FileManager.default.fileExists(atPath: repo + "/images/" + id))
        #expect(try cfsctl(["gc"]).stdout.hasSuffix("Pruned symlinks: 1 images, 0 streams\n"))
        #expect(!FileManager.default.fileExists(atPath: repo + "/images/" + id))
        #expect(try cfsctl(["oci", "compute-id", "--bootable", "os"]).stdout == id + "\n")
    }

    @Test(.enabled(if: findExecutable("python3") != nil && UKIBuilder.available, "needs python3, objcopy and systemd's EFI stub"))
    func ociUKIsNameTheBootableImage() throws {
        // As composefs-rs's examples/uki: the id of the base image, then a UKI naming it in /boot.
        let root = try makeRoot("oci-uki")
        try pull(root, tag: "base")
        let id = try cfsctl(["oci", "compute-id", "--bootable", "base"]).stdout.trimmingCharacters(in: .newlines)
        try UKIBuilder.build(commandLine: "composefs.digest=v1-sha512-12:\(id) rw", to: root + "/boot/EFI/Linux/os.efi")
        try pull(root, tag: "final")
        let result = try cfsctl(["oci", "prepare-boot", "final", "--bootdir", bootdir])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: bootdir + "/EFI/Linux/os.efi"))
                == Data(contentsOf: URL(fileURLWithPath: root + "/boot/EFI/Linux/os.efi")))
        try expectState("composefs.digest=?v1-sha512-12:" + id)

        // Refused with another id: nothing more written.
        try FileManager.default.removeItem(atPath: bootdir)
        try UKIBuilder.build(commandLine: "composefs=" + String(repeating: "cd", count: 64), to: root + "/boot/EFI/Linux/os.efi")
        try pull(root, tag: "wrong")
        let refused = try cfsctl(["oci", "prepare-boot", "wrong", "--bootdir", bootdir])
        #expect(refused.status != 0 && refused.stderr.contains("names the composefs image sha512:" + String(repeating: "cd", count: 64)))
        #expect(try snapshot(bootdir) == [])
    }
}
