// Boot Loader Specification Type 1 entries: composefs-rs 0.9's own cases, and where kernel
// arguments go (matched by key, the composefs one replacing every other, before a `--`).

import Boot
import ComposeFS
import FsVerity
import Testing

struct BootLoaderEntryTests {
    static let digest = ObjectID(hex: String(repeating: "ab", count: 32), algorithm: .sha256)!
    static let v1 = BootArgument(id: digest, format: .v1, insecure: false)
    static let v2 = BootArgument(id: digest, format: .v2, insecure: true)

    static func parameter(_ text: String) -> KernelCommandLine.Parameter { KernelCommandLine.parameters(text)[0] }

    @Test func linesAndValues() {
        #expect(BootLoaderEntry("").lines == [])
        #expect(BootLoaderEntry("title Test").lines == ["title Test"])
        #expect(BootLoaderEntry("title Test\nversion 1.0\n").lines == ["title Test", "version 1.0"])
        #expect(BootLoaderEntry("a\n\nb\n\n").lines == ["a", "", "b", ""])
        // "\r\n" is not one line end: the "\r" stays, and is written back.
        #expect(BootLoaderEntry("a\r\nb").lines == ["a\r", "b"])
        #expect(BootLoaderEntry("a\r\nb").text == "a\r\nb\n")

        let entry = BootLoaderEntry(
            "title\t\tTest Entry\nversion   1.0\nlinux\t/vmlinuz\ninitrd /one.img\ninitrd /two.img \noptions quiet\noptions splash\ntitleX\nversion\n")
        #expect(entry.value("title") == "Test Entry")
        #expect(entry.value("version") == "1.0")
        #expect(entry.value("linux") == "/vmlinuz")
        // Trailing white space is part of the value.
        #expect(entry.values("initrd") == ["/one.img", "/two.img "])
        #expect(entry.values("options") == ["quiet", "splash"])
        #expect(entry.value("nonexistent") == nil)
        #expect(BootLoaderEntry("titleTest Entry\nversionno_space\nversion").value("version") == nil)
        // Any white space may follow the key's first, which must be ASCII.
        #expect(BootLoaderEntry("title \u{2003}x").value("title") == "x")
        #expect(BootLoaderEntry("title\u{2003}x").value("title") == nil)
    }

    @Test func theBootArgumentGoesOnTheOptionsLine() {
        var entry = BootLoaderEntry("title Test Entry\nlinux /vmlinuz\n")
        entry.setBootArgument(Self.v1)
        #expect(entry.lines == ["title Test Entry", "linux /vmlinuz", "options " + Self.v1.text])

        entry = BootLoaderEntry("title T\noptions root=/dev/sda1\noptions second\n")
        entry.setBootArgument(Self.v2)
        #expect(entry.lines == ["title T", "options root=/dev/sda1 composefs=?" + Self.digest.hex, "options second"])

        // Replaced where it was, whichever key it had; other composefs arguments go.
        entry = BootLoaderEntry("options quiet composefs=old rw composefs.digest=v1-sha512-12:old  ro\n")
        entry.setBootArgument(Self.v1)
        #expect(entry.lines == ["options quiet \(Self.v1.text) rw  ro"])

        // Before init's arguments.
        entry = BootLoaderEntry("options quiet -- single composefs=x\n")
        entry.setBootArgument(Self.v2)
        #expect(entry.lines == ["options quiet \(Self.v2.text) -- single composefs=x"])

        // An options line with nothing after the key's white space, and one without any.
        entry = BootLoaderEntry("options \n")
        entry.setBootArgument(Self.v2)
        #expect(entry.lines == ["options  \(Self.v2.text)"])
        entry = BootLoaderEntry("options\n")
        entry.setBootArgument(Self.v2)
        #expect(entry.lines == ["options", "options \(Self.v2.text)"])
    }

    @Test func parametersReplaceTheirKey() {
        var entry = BootLoaderEntry("title Test Entry\noptions quiet splash root=/dev/sda1\n")
        entry.addParameter(Self.parameter("root=/dev/sda2"))
        #expect(entry.lines[1] == "options quiet splash root=/dev/sda2")
        entry.addParameter(Self.parameter("rw"))
        #expect(entry.lines[1] == "options quiet splash root=/dev/sda2 rw")
        entry.addParameter(Self.parameter("rw"))
        #expect(entry.lines[1] == "options quiet splash root=/dev/sda2 rw")
        // By key, not by prefix: `ro` is not `root=`, `quietx` not `quiet`.
        entry.addParameter(Self.parameter("ro"))
        entry.addParameter(Self.parameter("quiet=1"))
        #expect(entry.lines[1] == "options quiet=1 splash root=/dev/sda2 rw ro")
        // Quoted values stay as written.
        entry.addParameter(Self.parameter("\"root=/dev/disk/by-label/a b\""))
        #expect(entry.lines[1] == "options quiet=1 splash \"root=/dev/disk/by-label/a b\" rw ro")
        entry.addParameter(Self.parameter("root=x"))
        #expect(entry.lines[1] == "options quiet=1 splash root=x rw ro")

        // As composefs-rs adjusts a command line: the composefs argument first, then the others.
        var fresh = BootLoaderEntry("title Test Entry\nlinux /vmlinuz\n")
        fresh.setBootArgument(BootArgument(id: Self.digest, format: .v2, insecure: false))
        for text in ["quiet", "splash"] { fresh.addParameter(Self.parameter(text)) }
        #expect(fresh.lines[2] == "options composefs=\(Self.digest.hex) quiet splash")
    }

    @Test func relocationMovesTheFilesItNames() throws {
        let file = BootFile(path: "/boot/vmlinuz", inode: Inode(mode: 0o100644))
        let initrd = BootFile(path: "/boot/x/initrd", inode: Inode(mode: 0o100644))
        var entry = Type1Entry(
            fileName: Array("fedora.conf".utf8),
            entry: BootLoaderEntry("title F\nlinux /boot/vmlinuz\ninitrd\t /boot/x/initrd\nefi nodirectory\noptions a/b\n"),
            files: ["/boot/vmlinuz": file, "/boot/x/initrd": initrd])
        try entry.relocate(to: "example")
        #expect(entry.fileName == Array("example.conf".utf8))
        #expect(entry.entry.lines == ["title F", "linux /example/vmlinuz", "initrd\t /example/initrd", "efi nodirectory", "options a/b"])
        #expect(entry.files.keys.sorted() == ["/example/initrd", "/example/vmlinuz"])
        #expect(entry.files["/example/vmlinuz"]?.inode === file.inode)
    }
}
