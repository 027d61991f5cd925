// Merging layers into a root file system by composefs-rs 0.9's rules, on in-memory trees:
// whiteouts and opaque markers in entry order, replacements, shared hard links, parents never
// followed through symlinks, then the container-root and boot transforms.

import ComposeFS
import EROFS
import FsVerity
import Testing

@testable import OCI

/// Builds layer entries without a tar.
private enum Make {
    static func entry(_ path: String, _ kind: TarEntryKind, permissions: UInt32 = 0o755, uid: UInt32 = 0, link: String = "") -> TarEntry {
        TarEntry(
            path: Array(path.utf8), kind: kind, permissions: permissions, uid: uid, gid: 0,
            mtime: Timestamp(seconds: 1_700_000_000, nanoseconds: 0), size: 0, dataSize: 0, linkTarget: Array(link.utf8),
            deviceMajor: 0, deviceMinor: 0, xattrs: [], sparseMap: nil, sparseMapInData: false)
    }

    static func directory(_ path: String, permissions: UInt32 = 0o755, uid: UInt32 = 0, seconds: Int64 = 1_700_000_000) -> LayerEntry {
        var tarEntry = entry(path, .directory, permissions: permissions, uid: uid)
        tarEntry.mtime.seconds = seconds
        return LayerEntry(entry: tarEntry, content: .none)
    }

    static func file(_ path: String, _ text: String, permissions: UInt32 = 0o644, uid: UInt32 = 0, xattrs: [String: String] = [:]) -> LayerEntry {
        var tarEntry = entry(path, .regular, permissions: permissions, uid: uid)
        tarEntry.size = UInt64(text.utf8.count)
        tarEntry.dataSize = tarEntry.size
        tarEntry.xattrs = xattrs.sorted { $0.key < $1.key }.map { Xattr(key: Array($0.key.utf8), value: Array($0.value.utf8)) }
        return LayerEntry(entry: tarEntry, content: text.isEmpty ? .none : .inline(Array(text.utf8)))
    }

    /// A file whose content is an object (over the inline limit).
    static func object(_ path: String, size: UInt64, id: ObjectID) -> LayerEntry {
        var tarEntry = entry(path, .regular, permissions: 0o644)
        tarEntry.size = size
        tarEntry.dataSize = size
        return LayerEntry(entry: tarEntry, content: .object(id))
    }

    static func symlink(_ path: String, to target: String) -> LayerEntry {
        LayerEntry(entry: entry(path, .symlink, permissions: 0o777, link: target), content: .none)
    }

    static func hardlink(_ path: String, to target: String) -> LayerEntry {
        LayerEntry(entry: entry(path, .hardlink, permissions: 0o644, link: target), content: .none)
    }

    static func whiteout(_ path: String) -> LayerEntry { file(path, "") }
}

private func rootfs() -> Rootfs {
    Rootfs(
        expandSparse: { (_, _) throws(OCIError) in throw .unsupported("no sparse files here") },
        readObject: { (id) throws(OCIError) in throw .notFound("object \(id.hex)") })
}

/// The layers merged, without the transforms.
private func merge(_ layers: [[LayerEntry]]) throws -> Inode {
    let rootfs = rootfs()
    for (i, layer) in layers.enumerated() { try rootfs.apply(layer, layer: "layer\(i)") }
    return rootfs.root
}

/// The layers merged and transformed, as an image's tree.
private func build(_ layers: [[LayerEntry]], _ options: RootfsOptions = RootfsOptions()) throws -> Inode {
    let rootfs = rootfs()
    for (i, layer) in layers.enumerated() { try rootfs.apply(layer, layer: "layer\(i)") }
    return try rootfs.finish(options, image: "test")
}

/// Every path in the tree, "/" separated, with "/" after directories.
private func paths(_ root: Inode) -> [String] {
    var result: [String] = []
    func visit(_ directory: Inode, _ prefix: String) {
        for entry in directory.entries {
            let path = prefix + String(decoding: entry.name, as: UTF8.self)
            result.append(path + (entry.inode.isDirectory ? "/" : ""))
            if entry.inode.isDirectory { visit(entry.inode, path + "/") }
        }
    }
    visit(root, "/")
    return result
}

private func lookup(_ root: Inode, _ path: String) -> Inode? {
    var node = root
    for part in path.split(separator: "/") {
        guard let next = node.entry(named: Array(part.utf8))?.inode else { return nil }
        node = next
    }
    return node
}

private func content(_ root: Inode, _ path: String) -> String? {
    lookup(root, path)?.content.map { String(decoding: $0, as: UTF8.self) }
}

/// What the merge refused, as it says it.
private func refusal(_ layers: [[LayerEntry]]) -> String {
    do {
        _ = try merge(layers)
        return "accepted"
    } catch {
        return "\(error)"
    }
}

@Suite struct RootfsTests {
    @Test func whiteoutsApplyInEntryOrder() throws {
        let root = try merge([
            [Make.directory("etc"), Make.file("etc/a", "a"), Make.file("etc/b", "b"), Make.file("etc/c", "c")],
            // A whiteout removes what is there when it comes: a lower layer's file, or one of
            // its own layer added before it; what comes after it stays.
            [Make.file("etc/a", "new"), Make.whiteout("etc/.wh.a"), Make.whiteout("etc/.wh.b"), Make.file("etc/b", "again")],
        ])
        #expect(paths(root) == ["/etc/", "/etc/b", "/etc/c"])
        #expect(content(root, "etc/b") == "again")
    }

    @Test func opaqueMarkersEmptyTheDirectoryWhereTheyAre() throws {
        let root = try merge([
            [Make.directory("d"), Make.file("d/old", "1"), Make.directory("d/sub"), Make.file("d/sub/x", "2")],
            [Make.directory("d"), Make.file("d/before", "3"), Make.whiteout("d/.wh..wh..opq"), Make.file("d/after", "4")],
        ])
        #expect(paths(root) == ["/d/", "/d/after"])
        // Other ".wh..wh." names (aufs bookkeeping) name nothing there is.
        let plink = try merge([[Make.directory("d"), Make.file("d/f", "f")], [Make.whiteout("d/.wh..wh.plnk")]])
        #expect(paths(plink) == ["/d/", "/d/f"])
    }

    @Test func directoryOverDirectoryKeepsItsChildren() throws {
        let root = try merge([
            [Make.directory("dir", uid: 1), Make.file("dir/inside", "i"), Make.directory("becomes-file"), Make.file("becomes-dir", "f")],
            [
                Make.directory("dir", permissions: 0o700, uid: 2),
                Make.file("becomes-file", "now a file"),
                Make.directory("becomes-dir"), Make.file("becomes-dir/child", "c"),
            ],
        ])
        #expect(paths(root) == ["/becomes-dir/", "/becomes-dir/child", "/becomes-file", "/dir/", "/dir/inside"])
        let dir = try #require(lookup(root, "dir"))
        #expect(dir.uid == 2 && dir.mode == FileMode.directory | 0o700)
        #expect(content(root, "becomes-file") == "now a file")
    }

    @Test func hardLinksShareTheirTarget() throws {
        let id = FsVerity.digest(of: [UInt8](repeating: 7, count: 100))
        let root = try build([
            [Make.directory("usr"), Make.directory("bin"), Make.object("bin/tool", size: 100, id: id), Make.hardlink("bin/alias", to: "bin/tool")],
            [Make.hardlink("bin/again", to: "/bin/tool"), Make.hardlink("usr/old", to: "bin/alias"), Make.file("bin/alias", "replaced")],
        ])
        #expect(paths(root) == ["/bin/", "/bin/again", "/bin/alias", "/bin/tool", "/usr/", "/usr/old"])
        let tool = try #require(lookup(root, "bin/tool"))
        #expect(lookup(root, "bin/again") === tool && lookup(root, "usr/old") === tool)
        // nlink counts the names left; the first in sorted depth-first order is the primary.
        #expect(tool.nlink == 3 && tool.digest == id)
        let bin = try #require(lookup(root, "bin"))
        #expect(bin.entries.map(\.isHardlink) == [false, false, true])
        #expect(content(root, "bin/alias") == "replaced" && lookup(root, "bin/alias")?.nlink == 1)

        #expect(refusal([[Make.hardlink("dangling", to: "nothing")]]).contains("hard link to missing target 'nothing'"))
        #expect(refusal([[Make.directory("d"), Make.hardlink("to-dir", to: "d")]]).contains("hard link to a directory 'd'"))
        // The target's parents are not followed through symlinks either.
        #expect(refusal([[Make.directory("d"), Make.file("d/f", "f"), Make.symlink("s", to: "d"), Make.hardlink("l", to: "s/f")]])
            .contains("hard link to missing target 's/f'"))
    }

    @Test func parentsMustBeDirectoriesAlready() throws {
        // A symlink is never followed: not to a directory, not out of the tree.
        #expect(refusal([[Make.directory("usr"), Make.symlink("lib", to: "usr"), Make.file("lib/x", "x")]])
            == "layer layer0: entry 'lib/x': parent /lib is not a directory")
        #expect(refusal([[Make.symlink("up", to: "../../.."), Make.file("up/x", "u")]]).contains("parent /up is not a directory"))
        // Nothing is created on the way.
        #expect(refusal([[Make.file("a/b/c", "c")]]) == "layer layer0: entry 'a/b/c': parent directory /a does not exist")
        #expect(refusal([[Make.directory("a"), Make.whiteout("a/b/.wh.c")]]).contains("parent directory /a/b does not exist"))
        #expect(refusal([[Make.file("f", "x"), Make.file("f/child", "y")]]).contains("parent /f is not a directory"))
        #expect(refusal([[Make.file("../escape", "x")]]).contains("'..'"))
        // "./" prefixes and repeated slashes are the same path.
        let root = try merge([[Make.directory("./a//"), Make.directory("a/b/"), Make.file("/a/b/./c", "c")]])
        #expect(paths(root) == ["/a/", "/a/b/", "/a/b/c"])
    }

    @Test func theRootTakesUsrsMetadataAndRunIsEmptied() throws {
        let layers = [[
            Make.directory("./", permissions: 0o700, uid: 5, seconds: 1),
            Make.directory("usr", permissions: 0o755, uid: 3, seconds: 42),
            Make.directory("run"), Make.file("run/pid", "1"),
            Make.file("usr/f", "x", xattrs: ["user.note": "kept?", "security.capability": "cap", "trusted.x": "no"]),
        ]]
        let root = try build(layers)
        #expect(root.uid == 3 && root.mode == FileMode.directory | 0o755 && root.mtime.seconds == 42)
        #expect(paths(root) == ["/run/", "/usr/", "/usr/f"])
        #expect(lookup(root, "run")?.mtime.seconds == 42)
        #expect(lookup(root, "usr/f")?.xattrs.map { String(decoding: $0.key, as: UTF8.self) } == ["security.capability"])
        let userKept = try build(layers, RootfsOptions(xattrs: .keepUserXattrs))
        #expect(lookup(userKept, "usr/f")?.xattrs.map { String(decoding: $0.key, as: UTF8.self) }.sorted() == ["security.capability", "user.note"])
        // No /usr, no image.
        #expect(throws: OCIError.self) { try build([[Make.directory("etc")]]) }
        // Only a directory may describe the root.
        #expect(refusal([[Make.file("./", "x")]]).contains("the root can only be a directory"))
    }

    @Test func bootableTrees() throws {
        let base = [
            Make.directory("usr", seconds: 42), Make.directory("boot"), Make.file("boot/vmlinuz", "k"), Make.directory("sysroot"),
            Make.file("usr/f", "x", xattrs: ["security.selinux": "label"]),
        ]
        let root = try build([base], RootfsOptions(bootable: true))
        #expect(paths(root) == ["/boot/", "/sysroot/", "/usr/", "/usr/f"])
        #expect(lookup(root, "boot")?.mtime.seconds == 42)
        // Labels go without a policy (etc/selinux without a config names none)...
        #expect(lookup(root, "usr/f")?.xattrs.isEmpty == true)
        let unnamed = try build([base + [Make.directory("etc"), Make.directory("etc/selinux")]], RootfsOptions(bootable: true))
        #expect(lookup(unnamed, "usr/f")?.xattrs.isEmpty == true)
        // ...and come from the image's own policy when it has one.
        let policy = [
            Make.directory("etc"), Make.directory("etc/selinux"), Make.file("etc/selinux/config", "SELINUXTYPE=t\n"),
            Make.directory("etc/selinux/t"), Make.directory("etc/selinux/t/contexts"), Make.directory("etc/selinux/t/contexts/files"),
            Make.file("etc/selinux/t/contexts/files/file_contexts", "/.*\tu:r:t:s0\n/usr/f\t--\tu:r:f:s0\n"),
        ]
        let labelled = try build([base + policy], RootfsOptions(bootable: true))
        #expect(lookup(labelled, "usr/f")?.xattr(Array("security.selinux".utf8)) == Array("u:r:f:s0".utf8))
        #expect(lookup(labelled, "usr")?.xattr(Array("security.selinux".utf8)) == Array("u:r:t:s0".utf8))
        #expect(throws: OCIError.self) { try build([[Make.directory("usr")]], RootfsOptions(bootable: true)) }
    }

    @Test func layerPathsAreShownAsComposefsRSShowsThem() {
        func shown(_ path: String) -> String { String(decoding: TarEntry.absolutePath(Array(path.utf8)), as: UTF8.self) }
        #expect(shown("./etc/") == "/./etc")
        #expect(shown("/usr//bin") == "/usr//bin")
        #expect(shown("./") == "/.")
        #expect(shown("/") == "")
    }
}
