// Merging layers into a root file system, on in-memory trees: the OCI whiteout rules, opaque
// directories, replacements, hard links and symlinks in parent paths.

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

    static func directory(_ path: String, permissions: UInt32 = 0o755, uid: UInt32 = 0) -> LayerEntry {
        LayerEntry(entry: entry(path, .directory, permissions: permissions, uid: uid), content: .none)
    }

    static func file(_ path: String, _ text: String, permissions: UInt32 = 0o644, uid: UInt32 = 0) -> LayerEntry {
        var tarEntry = entry(path, .regular, permissions: permissions, uid: uid)
        tarEntry.size = UInt64(text.utf8.count)
        tarEntry.dataSize = tarEntry.size
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

private func merge(_ layers: [[LayerEntry]]) throws -> Inode {
    var rootfs = Rootfs(algorithm: .sha256) { (_, _) throws(OCIError) in
        throw .unsupported("no sparse files here")
    }
    for (i, layer) in layers.enumerated() { try rootfs.apply(layer, layer: "layer\(i)") }
    return rootfs.root
}

/// Every path in the tree, "/" separated, with "/" after directories and "@" after hard-linked names.
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

@Suite struct RootfsTests {
    @Test func whiteoutsHideOnlyWhatLowerLayersLeft() throws {
        let root = try merge([
            [Make.directory("etc"), Make.file("etc/a", "a"), Make.file("etc/b", "b")],
            // The whiteout hides the lower etc/a; the same layer's etc/a stays.
            [Make.whiteout("etc/.wh.a"), Make.file("etc/a", "new"), Make.whiteout("etc/.wh.b")],
        ])
        #expect(paths(root) == ["/etc/", "/etc/a"])
        #expect(content(root, "etc/a") == "new")
    }

    @Test func opaqueDirectoriesKeepTheirOwnLayer() throws {
        let root = try merge([
            [Make.directory("d"), Make.file("d/old", "1"), Make.directory("d/sub"), Make.file("d/sub/x", "2")],
            [Make.directory("d"), Make.whiteout("d/.wh..wh..opq"), Make.file("d/kept", "3")],
        ])
        #expect(paths(root) == ["/d/", "/d/kept"])
        // aufs bookkeeping markers other than the opaque one carry nothing.
        let plink = try merge([[Make.directory("d"), Make.file("d/f", "f")], [Make.whiteout("d/.wh..wh.plnk")]])
        #expect(paths(plink) == ["/d/", "/d/f"])
    }

    @Test func replacements() throws {
        let root = try merge([
            [Make.directory("dir", uid: 1), Make.file("dir/inside", "i"), Make.directory("becomes-file"), Make.file("becomes-dir", "f")],
            [
                // A directory over a directory takes its metadata and keeps the contents.
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

    @Test func hardLinksBecomeCopiesOfTheirTarget() throws {
        let id = FsVerity.digest(of: [UInt8](repeating: 7, count: 100))
        let root = try merge([
            [Make.directory("bin"), Make.object("bin/tool", size: 100, id: id), Make.hardlink("bin/alias", to: "bin/tool")],
            [Make.hardlink("bin/again", to: "/bin/tool")],
        ])
        #expect(paths(root) == ["/bin/", "/bin/again", "/bin/alias", "/bin/tool"])
        let tool = try #require(lookup(root, "bin/tool"))
        for name in ["bin/alias", "bin/again"] {
            let copy = try #require(lookup(root, name))
            #expect(copy !== tool)
            #expect(copy.digest == id && copy.payload == Array(id.objectPath.utf8) && copy.size == 100)
        }
        #expect(throws: OCIError.self) { try merge([[Make.hardlink("dangling", to: "nothing")]]) }
        #expect(throws: OCIError.self) { try merge([[Make.directory("d"), Make.hardlink("to-dir", to: "d")]]) }
    }

    @Test func symlinksInParentsResolveInsideTheTree() throws {
        let root = try merge([
            [Make.directory("usr"), Make.directory("usr/lib"), Make.symlink("lib", to: "usr/lib"), Make.symlink("abs", to: "/usr")],
            [Make.file("lib/via-relative", "r"), Make.file("abs/lib/via-absolute", "a")],
            // ".." in a link target never climbs above the root.
            [Make.symlink("up", to: "../../.."), Make.file("up/usr/at-root", "u")],
        ])
        #expect(content(root, "usr/lib/via-relative") == "r")
        #expect(content(root, "usr/lib/via-absolute") == "a")
        #expect(content(root, "usr/at-root") == "u")
        #expect(lookup(root, "lib")?.isSymlink == true)
        // A symlink loop is refused, not followed forever.
        #expect(throws: OCIError.self) { try merge([[Make.symlink("a", to: "b"), Make.symlink("b", to: "a"), Make.file("a/x", "x")]]) }
    }

    @Test func dotDotComponentsAndNonDirectoryParentsAreRefused() throws {
        #expect(throws: OCIError.self) { try merge([[Make.file("../escape", "x")]]) }
        #expect(throws: OCIError.self) { try merge([[Make.file("f", "x"), Make.file("f/child", "y")]]) }
        // "./" prefixes and repeated slashes are the same path.
        let root = try merge([[Make.directory("./a//b/"), Make.file("/a/b/./c", "c")]])
        #expect(paths(root) == ["/a/", "/a/b/", "/a/b/c"])
    }

    @Test func theRootTakesTheMetadataOfItsEntry() throws {
        let root = try merge([[Make.directory("./", permissions: 0o700, uid: 5), Make.file("f", "x")]])
        #expect(root.uid == 5 && root.mode == FileMode.directory | 0o700)
        #expect(throws: OCIError.self) { try merge([[Make.file("./", "x")]]) }
    }
}
