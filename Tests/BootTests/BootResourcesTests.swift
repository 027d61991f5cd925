// Finding the kernels of an image's tree as composefs-rs 0.9 does: where, in what order, and
// the errors (with composefs-rs's words for the tree lookups).

import Boot
import ComposeFS
import Testing

/// An in-memory tree, made path by path.
struct TreeBuilder {
    let root = Inode(mode: 0o040755)

    func directory(_ path: String) -> Inode {
        var current = root
        for name in path.split(separator: "/") {
            if let existing = current.entry(named: Array(name.utf8)) {
                current = existing.inode
                continue
            }
            let child = Inode(mode: 0o040755)
            try! current.addEntry(Array(name.utf8), child)
            current = child
        }
        return current
    }

    @discardableResult
    func add(_ path: String, _ inode: Inode) -> Inode {
        let slash = path.lastIndex(of: "/")!
        try! directory(String(path[..<slash])).addEntry(Array(path[path.index(after: slash)...].utf8), inode)
        return inode
    }

    @discardableResult
    func file(_ path: String, _ content: [UInt8]) -> Inode {
        let inode = Inode(mode: 0o100644)
        inode.content = content
        inode.size = UInt64(content.count)
        return add(path, inode)
    }

    @discardableResult
    func file(_ path: String, _ text: String) -> Inode { file(path, Array(text.utf8)) }

    func symlink(_ path: String, to target: String) {
        let inode = Inode(mode: 0o120777)
        inode.payload = Array(target.utf8)
        add(path, inode)
    }
}

/// Reads the in-memory files.
var inlineReader: BootFileReader { BootFileReader { file in file.inode.content ?? [] } }

struct BootResourcesTests {
    func find(_ tree: TreeBuilder) throws(BootError) -> [BootEntry] { try BootResources.find(in: tree.root, reader: inlineReader) }

    @Test func everyKindIsFoundInComposefsRSOrder() throws {
        let tree = TreeBuilder()
        let kernel = tree.file("/boot/vmlinuz-1", "kernel")
        tree.file("/boot/initrd-1", "initrd")
        tree.file("/boot/loader/entries/b.conf", "title B\nlinux /boot/vmlinuz-1\n")
        tree.file("/boot/loader/entries/a.conf", "title A\nlinux /boot/vmlinuz-1\ninitrd /boot/initrd-1\ninitrd //boot/./initrd-1\n")
        tree.file("/boot/loader/entries/notes.txt", "not an entry")
        tree.file("/boot/EFI/Linux/z.efi", "z")
        tree.file("/boot/EFI/Linux/a.efi", "a")
        tree.file("/boot/EFI/Linux/a.efi.extra.d/x.addon.efi", "x")
        tree.file("/boot/EFI/Linux/readme", "no")
        tree.file("/boot/loader/addons/g.addon.efi", "g")
        tree.file("/usr/lib/modules/6.1/vmlinuz", "v61")
        tree.file("/usr/lib/modules/6.1/initramfs.img", "i61")
        tree.file("/usr/lib/modules/6.1/uki.efi", "u61")
        tree.file("/usr/lib/modules/6.1/kernel/drivers/deep.efi", "deep")
        tree.file("/usr/lib/modules/6.2/vmlinuz", "v62")
        tree.file("/usr/lib/modules/not-a-directory", "f")
        _ = tree.directory("/usr/lib/modules/6.3")
        let osRelease = tree.file("/usr/lib/os-release", "ID=test\n")

        let entries = try find(tree)
        var summary: [String] = []
        for entry in entries {
            switch entry {
            case let .type1(t1):
                summary.append("type1 " + String(decoding: t1.fileName, as: UTF8.self) + " " + t1.files.keys.sorted().joined(separator: ","))
            case let .type2(t2):
                summary.append(
                    "type2 \(t2.kind) \(t2.kernelVersion.map { String(decoding: $0, as: UTF8.self) } ?? "-") "
                        + t2.relativePath.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/") + " " + t2.file.path)
            case let .modulesKernel(kernel):
                summary.append("vmlinuz \(kernel.kernelVersion) \(kernel.initramfs?.path ?? "-") \(kernel.osRelease?.path ?? "-")")
                #expect(kernel.osRelease?.inode === osRelease)
            }
        }
        #expect(
            summary == [
                "type1 a.conf //boot/./initrd-1,/boot/initrd-1,/boot/vmlinuz-1",
                "type1 b.conf /boot/vmlinuz-1",
                "type2 uki - a.efi /boot/EFI/Linux/a.efi",
                "type2 addon - a.efi.extra.d/x.addon.efi /boot/EFI/Linux/a.efi.extra.d/x.addon.efi",
                "type2 uki - z.efi /boot/EFI/Linux/z.efi",
                "type2 globalAddon - g.addon.efi /boot/loader/addons/g.addon.efi",
                "type2 uki 6.1 kernel/drivers/deep.efi /usr/lib/modules/6.1/kernel/drivers/deep.efi",
                "type2 uki 6.1 uki.efi /usr/lib/modules/6.1/uki.efi",
                "vmlinuz 6.1 /usr/lib/modules/6.1/initramfs.img /usr/lib/os-release",
                "vmlinuz 6.2 - /usr/lib/os-release",
            ])
        if case let .type1(t1) = entries[0] { #expect(t1.files["/boot/vmlinuz-1"]?.inode === kernel) }
        #expect(try find(TreeBuilder()).isEmpty)
    }

    @Test func badTreesAndEntriesAreErrorsNamingThem() {
        func failure(_ build: (TreeBuilder) -> Void) -> String {
            let tree = TreeBuilder()
            build(tree)
            do {
                _ = try find(tree)
                return "no error"
            } catch {
                return error.description
            }
        }
        #expect(failure { $0.file("/boot/loader", "x") } == "/boot/loader/entries: Directory entry \"loader\" is not a subdirectory")
        #expect(failure { _ = $0.directory("/boot/loader/entries/x.conf") } == "boot entry /boot/loader/entries/x.conf: is a directory")
        #expect(
            failure { $0.symlink("/boot/loader/entries/x.conf", to: "y.conf") }
                == "boot entry /boot/loader/entries/x.conf: is not a regular file")
        #expect(failure { $0.file("/boot/loader/entries/x.conf", [0x6C, 0xFF]) } == "boot entry /boot/loader/entries/x.conf: is not UTF-8")
        let cases: [(String, String)] = [
            ("linux /boot/missing", "linux /boot/missing: Directory entry \"missing\" does not exist"),
            ("linux /boot/no/dir/vmlinuz", "linux /boot/no/dir/vmlinuz: Directory entry \"/boot/no/dir\" does not exist"),
            ("initrd /boot/dir", "initrd /boot/dir: Directory entry \"dir\" is a directory"),
            ("linux /boot/link", "linux /boot/link: Directory entry \"link\" is not a regular file"),
            ("linux /boot/file/x", "linux /boot/file/x: Directory entry \"file\" is not a subdirectory"),
            ("linux /boot/../boot/file", "linux /boot/../boot/file: Invalid filename \"/boot/../boot\""),
            ("linux ./boot/file", "linux ./boot/file: Invalid filename \"./boot\""),
            ("efi /boot/..", "efi /boot/..: Invalid filename \"/boot/..\""),
            ("linux /", "linux /: Invalid filename \"/\""),
            // Trailing white space is part of the path.
            ("linux /boot/file ", "linux /boot/file : Directory entry \"file \" does not exist"),
        ]
        for (line, reason) in cases {
            let message = failure { tree in
                tree.file("/boot/file", "f")
                _ = tree.directory("/boot/dir")
                tree.symlink("/boot/link", to: "file")
                tree.file("/boot/loader/entries/x.conf", "title x\n\(line)\n")
            }
            #expect(message == "boot entry /boot/loader/entries/x.conf: " + reason)
        }
        #expect(failure { $0.symlink("/boot/EFI/Linux/a.efi", to: "b.efi") } == "UKI /boot/EFI/Linux/a.efi: is not a regular file")
        #expect(failure { $0.file("/usr/lib", "x") } == "/usr/lib/modules: Directory entry \"lib\" is not a subdirectory")
        #expect(
            failure { tree in
                let kernel = Inode(mode: 0o040755)
                try! tree.directory("/usr/lib/modules").addEntry([0x36, 0xFF], kernel)
                try! kernel.addEntry(Array("vmlinuz".utf8), Inode(mode: 0o100644))
            } == "kernel 6\\xff: the name of /usr/lib/modules/6\\xff is not UTF-8")
        // A vmlinuz that is not a regular file is no kernel; a .efi directory is searched.
        #expect(
            failure { tree in
                _ = tree.directory("/usr/lib/modules/6.1/vmlinuz")
                tree.symlink("/usr/lib/modules/6.2/vmlinuz", to: "x")
                _ = tree.directory("/boot/EFI/Linux/dir.efi")
            } == "no error")
    }

    @Test func kernelsBecomeType1Entries() throws {
        let tree = TreeBuilder()
        let vmlinuz = tree.file("/usr/lib/modules/6.9.0-arch1-1/vmlinuz", "k")
        let initramfs = tree.file("/usr/lib/modules/6.9.0-arch1-1/initramfs.img", "i")
        tree.file("/usr/lib/modules/6.2/vmlinuz", "k")
        let kernels = try find(tree).compactMap { entry -> ModulesKernel? in
            if case let .modulesKernel(kernel) = entry { return kernel }
            return nil
        }
        #expect(kernels.map(\.kernelVersion) == ["6.2", "6.9.0-arch1-1"])
        let entry = try kernels[1].type1Entry(entryID: nil)
        #expect(entry.fileName == Array("6.9.0-arch1-1.conf".utf8))
        #expect(
            entry.entry.text
                == "# File created by composefs\ntitle todoOS\nversion 0-todo\nlinux /6.9.0-arch1-1/vmlinuz\ninitrd /6.9.0-arch1-1/initramfs.img\n")
        #expect(entry.files["/6.9.0-arch1-1/vmlinuz"]?.inode === vmlinuz)
        #expect(entry.files["/6.9.0-arch1-1/initramfs.img"]?.inode === initramfs)
        let named = try kernels[1].type1Entry(entryID: "example")
        #expect(named.fileName == Array("example.conf".utf8))
        #expect(named.entry.values("linux") == ["/example/vmlinuz"])
        #expect(throws: BootError.kernel(version: "6.2", reason: "no initramfs.img in /usr/lib/modules/6.2")) {
            try kernels[0].type1Entry(entryID: nil)
        }
    }
}
