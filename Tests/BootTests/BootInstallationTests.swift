// Writing an entry to a boot directory, file by file: names, contents and modes as composefs-rs
// 0.9 writes them; UKIs refused unless they name the image; nothing left behind on failure.

import Boot
import ComposeFS
import Foundation
import FsVerity
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// What is below a directory: "d NAME MODE" and "f NAME MODE CONTENT", sorted.
func snapshot(_ root: String) throws -> [String] {
    guard FileManager.default.fileExists(atPath: root) else { return [] }
    var lines: [String] = []
    for name in try FileManager.default.subpathsOfDirectory(atPath: root).sorted() {
        let path = root + "/" + name
        var info = stat()
        try #require(lstat(path, &info) == 0)
        let mode = String(info.st_mode & 0o7777, radix: 8)
        if (info.st_mode & S_IFMT) == S_IFDIR {
            lines.append("d \(name) \(mode)")
        } else {
            lines.append("f \(name) \(mode) " + String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self))
        }
    }
    return lines
}

/// A scratch directory removed when the value goes away.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("cfs-boot-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The process's umask, which the modes of what is written follow.
let currentUmask: mode_t = {
    let mask = umask(0o022)
    umask(mask)
    return mask
}()

let fileMode = String(0o666 & ~currentUmask, radix: 8)
let directoryMode = String(0o777 & ~currentUmask, radix: 8)

struct BootInstallationTests {
    static let id = ObjectID(hex: String(repeating: "5a", count: 32), algorithm: .sha256)!
    static let argument = BootArgument(id: id, format: .v1, insecure: false)
    let work = try! TemporaryDirectory()

    func options(entryID: String? = nil, cmdline: [String] = []) throws -> BootInstallOptions {
        try BootInstallOptions(bootDirectory: work.url.path + "/efi", entryID: entryID, commandLine: cmdline)
    }

    func install(_ tree: TreeBuilder, entryID: String? = nil, cmdline: [String] = [], argument: BootArgument = argument) throws {
        let entries = try BootResources.find(in: tree.root, reader: inlineReader)
        let options = try options(entryID: entryID, cmdline: cmdline)
        try PrepareBoot.install(entries, argument: argument, options: options, reader: inlineReader, stateRoot: work.url.path + "/sysroot")
    }

    func type1Tree() -> TreeBuilder {
        let tree = TreeBuilder()
        tree.file("/boot/vmlinuz-6.1", "KERNEL")
        tree.file("/boot/initrd-6.1", "INITRD")
        tree.file("/boot/loader/entries/debian-6.1.conf", "title Debian\nversion 6.1\nlinux /boot/vmlinuz-6.1\ninitrd /boot/initrd-6.1\noptions root=/dev/vda2 ro\n")
        tree.file("/boot/loader/entries/zz.conf", "title second entry: not written\n")
        return tree
    }

    @Test func type1EntriesKeepTheirPathsWithoutAnEntryID() throws {
        try install(type1Tree(), cmdline: ["quiet", "console=ttyS0 rw"])
        #expect(
            try snapshot(work.url.path + "/efi") == [
                "d boot \(directoryMode)",
                "f boot/initrd-6.1 \(fileMode) INITRD",
                "f boot/vmlinuz-6.1 \(fileMode) KERNEL",
                "d loader \(directoryMode)",
                "d loader/entries \(directoryMode)",
                "f loader/entries/debian-6.1.conf \(fileMode) title Debian\nversion 6.1\nlinux /boot/vmlinuz-6.1\ninitrd /boot/initrd-6.1\n"
                    + "options root=/dev/vda2 ro \(Self.argument.text) quiet console=ttyS0 rw\n",
            ])
        let state = "sysroot/state/deploy/" + Self.id.hex
        #expect(
            try snapshot(work.url.path).filter { $0.contains("sysroot") } == [
                "d sysroot \(directoryMode)", "d sysroot/state \(directoryMode)", "d sysroot/state/deploy \(directoryMode)",
                "d \(state) \(directoryMode)", "d \(state)/etc \(directoryMode)", "d \(state)/etc/upper \(directoryMode)",
                "d \(state)/etc/work \(directoryMode)", "d \(state)/var \(directoryMode)",
            ])
    }

    @Test func anEntryIDMovesTheFiles() throws {
        try install(type1Tree(), entryID: "example", argument: BootArgument(id: Self.id, format: .v2, insecure: true))
        #expect(
            try snapshot(work.url.path + "/efi") == [
                "d example \(directoryMode)",
                "f example/initrd-6.1 \(fileMode) INITRD",
                "f example/vmlinuz-6.1 \(fileMode) KERNEL",
                "d loader \(directoryMode)",
                "d loader/entries \(directoryMode)",
                "f loader/entries/example.conf \(fileMode) title Debian\nversion 6.1\nlinux /example/vmlinuz-6.1\ninitrd /example/initrd-6.1\n"
                    + "options root=/dev/vda2 ro composefs=?\(Self.id.hex)\n",
            ])
    }

    @Test func modulesKernelsAreNamedByVersionOrEntryID() throws {
        let tree = TreeBuilder()
        tree.file("/usr/lib/modules/6.1.0-13-amd64/vmlinuz", "K")
        tree.file("/usr/lib/modules/6.1.0-13-amd64/initramfs.img", "I")
        try install(tree)
        let entry = "# File created by composefs\ntitle todoOS\nversion 0-todo\nlinux /6.1.0-13-amd64/vmlinuz\ninitrd /6.1.0-13-amd64/initramfs.img\n"
        #expect(
            try snapshot(work.url.path + "/efi") == [
                "d 6.1.0-13-amd64 \(directoryMode)", "f 6.1.0-13-amd64/initramfs.img \(fileMode) I", "f 6.1.0-13-amd64/vmlinuz \(fileMode) K",
                "d loader \(directoryMode)", "d loader/entries \(directoryMode)",
                "f loader/entries/6.1.0-13-amd64.conf \(fileMode) \(entry)options \(Self.argument.text)\n",
            ])
        // Again, with an entry id and arguments: files are replaced, the new ones added.
        try install(tree, entryID: "example", cmdline: ["rw"])
        #expect(try snapshot(work.url.path + "/efi").contains("f example/vmlinuz \(fileMode) K"))
        #expect(
            try snapshot(work.url.path + "/efi").contains(
                "f loader/entries/example.conf \(fileMode) # File created by composefs\ntitle todoOS\nversion 0-todo\n"
                    + "linux /example/vmlinuz\ninitrd /example/initramfs.img\noptions \(Self.argument.text) rw\n"))
    }

    /// A UKI made by hand (any PE with a .cmdline will do here; real ones are in the tool tests).
    static func uki(_ commandLine: String) -> [UInt8] {
        let text = Array(commandLine.utf8)
        return makePE(sections: [(".cmdline", UInt32(text.count), peDataOffset(sections: 1), UInt32(text.count))], data: text)
    }

    @Test func ukisAreCopiedWhenTheyNameTheImage() throws {
        let other = String(repeating: "77", count: 64)
        let accepted = [
            "quiet \(Self.argument.text) rw",
            // composefs.digest= of another algorithm is skipped, then composefs= is taken (its form does not matter).
            "composefs.digest=v1-sha512-12:\(other) composefs=?\(Self.id.hex)",
            // composefs.digest= of the repository's algorithm wins over an earlier composefs=.
            "composefs=\(String(repeating: "66", count: 32)) composefs.digest=v2-sha256-12:\(Self.id.hex)",
        ]
        for (index, commandLine) in accepted.enumerated() {
            let tree = TreeBuilder()
            let bytes = Self.uki(commandLine)
            tree.file("/boot/EFI/Linux/sub/os.efi", bytes)
            try install(tree, entryID: index == 0 ? nil : "e\(index)")
            let name = index == 0 ? "os.efi" : "e\(index).efi"
            let written = try Data(contentsOf: URL(fileURLWithPath: work.url.path + "/efi/EFI/Linux/sub/" + name))
            #expect([UInt8](written) == bytes, "\(commandLine)")
        }
        #expect(try snapshot(work.url.path + "/efi").filter { $0.hasPrefix("d") } == ["d EFI \(directoryMode)", "d EFI/Linux \(directoryMode)", "d EFI/Linux/sub \(directoryMode)"])
    }

    @Test func refusedUKIsLeaveNothingBehind() throws {
        let other = String(repeating: "66", count: 32)
        let cases: [([UInt8], [String], String)] = [
            (Self.uki("composefs=\(other)"), [],
             "UKI /boot/EFI/Linux/a.efi: its .cmdline names the composefs image sha256:\(other), not this one (sha256:\(Self.id.hex))"),
            (Self.uki("rw quiet"), [], "UKI /boot/EFI/Linux/a.efi: its .cmdline has no composefs= or composefs.digest= argument: \"rw quiet\""),
            (Self.uki("composefs.digest=v3-sha256-12:\(Self.id.hex)"), [],
             "UKI /boot/EFI/Linux/a.efi: its .cmdline: invalid kernel argument composefs.digest=v3-sha256-12:\(Self.id.hex): unsupported format version 'v3'"),
            (Array("MZ not a PE".utf8), [], "UKI /boot/EFI/Linux/a.efi: not a valid EFI executable: 11 bytes is too short for a DOS header (64)"),
            (makePE(sections: [], data: []), [], "UKI /boot/EFI/Linux/a.efi: no '.cmdline' section"),
            (Self.uki(Self.argument.text), ["rw"], "UKI /boot/EFI/Linux/a.efi: --cmdline arguments cannot be added to a UKI"),
        ]
        for (bytes, cmdline, message) in cases {
            let tree = TreeBuilder()
            tree.file("/boot/EFI/Linux/a.efi", bytes)
            #expect {
                try install(tree, cmdline: cmdline)
            } throws: {
                ($0 as? BootError)?.description == message
            }
            #expect(try snapshot(work.url.path) == [], "\(message)")
        }
    }

    @Test func failuresWhileWritingLeaveNothingNew() throws {
        // loader/ is a file: the kernel files staged before are removed, with the directories made for them.
        let efi = work.url.path + "/efi"
        try FileManager.default.createDirectory(atPath: efi + "/boot", withIntermediateDirectories: true)
        try Data("old".utf8).write(to: URL(fileURLWithPath: efi + "/boot/vmlinuz-6.1"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: efi + "/loader"))
        let before = try snapshot(efi)
        #expect(throws: BootError.destination(path: efi + "/loader", reason: "exists and is not a directory")) {
            try install(type1Tree())
        }
        #expect(try snapshot(efi) == before)
        #expect(try snapshot(work.url.path).allSatisfy { !$0.contains("sysroot") })
        try FileManager.default.removeItem(atPath: efi + "/loader")

        // An entry whose files would collide, or could not be written where it names them.
        let tree = TreeBuilder()
        tree.file("/a/k", "1")
        tree.file("/b/k", "2")
        tree.file("/boot/loader/entries/x.conf", "linux /a/k\ninitrd /b/k\n")
        #expect(throws: BootError.destination(path: "/example/k", reason: "two different files of the entry (/a/k, /b/k) would be written here")) {
            try install(tree, entryID: "example")
        }
        let relative = TreeBuilder()
        relative.file("/k", "1")
        relative.file("/boot/loader/entries/x.conf", "linux k\n")
        #expect(throws: BootError.destination(path: "k", reason: "not an absolute path")) { try install(relative, entryID: "example") }
        #expect(try snapshot(efi) == before.filter { !$0.contains("loader") })
    }

    @Test func badOptionsAndNoEntriesAreRefused() throws {
        for id in ["", ".", "..", "a/b", "a\nb"] {
            #expect(throws: BootError.self) { try options(entryID: id) }
        }
        #expect(throws: BootError.invalidArgument("", reason: "it is empty")) { try options(cmdline: [""]) }
        #expect(throws: BootError.invalidArgument("rw -- single", reason: "'--' (arguments for init) cannot be added")) {
            try options(cmdline: ["rw -- single"])
        }
        #expect(try options(cmdline: ["a=1 b", "c"]).extraParameters.map(\.raw) == ["a=1", "b", "c"])
        #expect(throws: BootError.noBootEntries) { try install(TreeBuilder()) }
        let noInitramfs = TreeBuilder()
        noInitramfs.file("/usr/lib/modules/6.2/vmlinuz", "k")
        #expect(throws: BootError.kernel(version: "6.2", reason: "no initramfs.img in /usr/lib/modules/6.2")) { try install(noInitramfs) }
        #expect(try snapshot(work.url.path) == [])
    }

    @Test func stateGoesBesideTheRepository() throws {
        let cases: [(String?, String)] = [
            (nil, "/sysroot"), ("/sysroot/composefs", "/sysroot"), ("/sysroot/composefs/", "/sysroot"), ("/repo", "/"),
            ("repo", "."), ("a/b", "a"), ("a//b/.", "a"), ("./repo", "."), ("../repo", ".."), ("/a/b/../c", "/a/b/.."),
        ]
        for (repository, root) in cases {
            #expect(try DeploymentState.root(repository: repository) == root, "\(repository ?? "nil")")
        }
        #expect(throws: BootError.self) { try DeploymentState.root(repository: "/") }
        #expect(throws: BootError.self) { try DeploymentState.root(repository: "") }
        let made = try DeploymentState.create(in: work.url.path + "/", for: Self.argument)
        #expect(made == work.url.path + "/state/deploy/" + Self.id.hex)
        // Again: existing ones are kept.
        try Data("kept".utf8).write(to: URL(fileURLWithPath: made + "/var/file"))
        try DeploymentState.create(in: work.url.path, for: Self.argument)
        #expect(try snapshot(made).contains("f var/file 644 kept") || currentUmask != 0o022)
    }
}

extension BootInstallationTests {
    @Test func anArgumentHiddenByAQuoteIsRefused() throws {
        let tree = TreeBuilder()
        tree.file("/k", "1")
        tree.file("/boot/loader/entries/x.conf", "linux /k\noptions root=\"unclosed\n")
        #expect(
            throws: BootError.entry(
                path: "loader/entries/x.conf",
                reason: "the composefs argument would not be a parameter of its own on the options line (an unclosed '\"'?)")
        ) { try install(tree) }
        #expect(try snapshot(work.url.path) == [])
    }
}
