// Merging layers into the root file system the way composefs-rs 0.9 does
// (`create_filesystem`), so image ids match the ones it computes:
// - entries apply in archive order; a whiteout ".wh.NAME" removes NAME and ".wh..wh..opq" empties
//   its directory at that point, so they hit entries of the same layer added before them too;
// - parents are looked up without following symlinks and never created: a missing parent or
//   one that is not a directory fails the layer;
// - an entry replaces what was at its path, except that a directory over a directory only takes
//   its metadata and keeps the contents;
// - a hard link names the same inode as its target (nlink counts the names);
// - then the container-root transform (the root takes /usr's metadata, /run emptied, xattrs
//   filtered) and, for bootable images, the boot transform: /boot and /sysroot emptied, then
//   the SELinux labels of the image's own policy (read from the tree), or none without one.
// Sparse members are expanded (composefs-rs refuses them): refusing would fail pulls that work
// today, and an expanded file is exactly what the tar describes.
// Nothing here touches the host file system: the tree is built in memory.

import ComposeFS
import ComposeFSBase
import EROFS
import FsVerity
import SELinux

/// How an image's layers become its tree (`cfsctl oci … --xattrs … --bootable`).
public struct RootfsOptions: Sendable, Hashable {
    public var xattrs: XattrFilter
    /// The boot transform: /boot and /sysroot emptied, SELinux labels from the image's policy
    /// (none without one).
    public var bootable: Bool

    public init(xattrs: XattrFilter = .allowlistOnly, bootable: Bool = false) {
        self.xattrs = xattrs
        self.bootable = bootable
    }
}

package struct Rootfs {
    package let root: Inode
    /// Makes the object of a sparse file's expanded content; returns its digest.
    let expandSparse: (_ entry: TarEntry, _ content: EntryContent) throws(OCIError) -> ObjectID
    /// The content of a stored object (a policy file of a bootable image).
    let readObject: (ObjectID) throws(OCIError) -> [UInt8]

    static let whiteoutPrefix = Array(".wh.".utf8)
    static let opaqueMarker = Array(".wh..opq".utf8)

    package init(
        expandSparse: @escaping (_ entry: TarEntry, _ content: EntryContent) throws(OCIError) -> ObjectID,
        readObject: @escaping (ObjectID) throws(OCIError) -> [UInt8]
    ) {
        root = Inode(mode: FileMode.directory | 0o755)
        self.expandSparse = expandSparse
        self.readObject = readObject
    }

    /// Applies one layer's entries, in order.
    package func apply(_ entries: [LayerEntry], layer: String) throws(OCIError) {
        for item in entries { try apply(item, layer: layer) }
    }

    /// The transforms after the last layer; `image` names the image in errors.
    package func finish(_ options: RootfsOptions, image: String) throws(OCIError) -> Inode {
        do throws(ContainerRootError) {
            try ContainerRoot.prepare(root, xattrs: options.xattrs)
            if options.bootable { try ContainerRoot.prepareBoot(root) }
        } catch {
            throw .rootfs(image: image, reason: error.description)
        }
        if options.bootable {
            let readObject = self.readObject
            do throws(SELinuxError) {
                // The hard links it splits are whole copies: the content is in the tree already.
                _ = try SELinuxLabels.apply(
                    to: root,
                    policy: .tree { (file) throws(PolicyReadError) in
                        if let content = file.content { return content }
                        guard let digest = file.digest else { return [] }
                        do throws(OCIError) { return try readObject(digest) } catch { throw PolicyReadError(error.description) }
                    })
            } catch {
                throw .selinux(error)
            }
        }
        ContainerRoot.countLinks(root)
        return root
    }

    // MARK: Paths

    /// Path components, with leading "/" and "." parts dropped; ".." is refused.
    static func components(of path: [UInt8], layer: String) throws(OCIError) -> [[UInt8]] {
        var result: [[UInt8]] = []
        for part in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if part.elementsEqual([0x2E]) { continue }
            if part.elementsEqual([0x2E, 0x2E]) {
                throw OCIError.badTar(layer: layer, entry: displayBytes(path), reason: "path has a '..' component")
            }
            guard part.count <= Limits.nameMax else {
                throw OCIError.badTar(layer: layer, entry: displayBytes(path), reason: "file name longer than \(Limits.nameMax) bytes")
            }
            result.append(Array(part))
        }
        return result
    }

    /// The directory at `components`, every one of them a directory (symlinks are not followed).
    private func directory(
        _ components: ArraySlice<[UInt8]>, layer: String, entry: [UInt8]
    ) throws(OCIError) -> Inode {
        var current = root
        for (index, name) in components.enumerated() {
            // Spelled out only for the error.
            func path() -> String { "/" + components.prefix(index + 1).map { displayBytes($0) }.joined(separator: "/") }
            guard let child = current.entry(named: name)?.inode else {
                throw .badTar(layer: layer, entry: displayBytes(entry), reason: "parent directory \(path()) does not exist")
            }
            guard child.isDirectory else {
                throw .badTar(layer: layer, entry: displayBytes(entry), reason: "parent \(path()) is not a directory")
            }
            current = child
        }
        return current
    }

    // MARK: Entries

    private func apply(_ item: LayerEntry, layer: String) throws(OCIError) {
        let entry = item.entry
        func fail(_ reason: String) -> OCIError { .badTar(layer: layer, entry: displayBytes(entry.path), reason: reason) }
        let components = try Self.components(of: entry.path, layer: layer)
        guard let name = components.last else {
            // The root itself: only a directory may describe it, and only its metadata is taken.
            guard entry.kind == .directory else { throw fail("the root can only be a directory") }
            try setMetadata(of: root, from: entry, layer: layer)
            return
        }
        // As composefs-rs, the inode first (a hard link's target must exist), then its parent.
        let inode = try makeInode(item, layer: layer)
        let parent = try directory(components.dropLast(), layer: layer, entry: entry.path)
        if let hidden = name.starts(with: Self.whiteoutPrefix) ? name.dropFirst(Self.whiteoutPrefix.count) : nil {
            if hidden.elementsEqual(Self.opaqueMarker) {
                parent.removeAllEntries()
            } else {
                parent.removeEntry(Array(hidden))
            }
            return
        }
        if inode.isDirectory, let existing = parent.entry(named: name)?.inode, existing.isDirectory {
            try setMetadata(of: existing, from: entry, layer: layer)
            return
        }
        parent.removeEntry(name)
        do { try parent.addEntry(name, inode) } catch { throw fail(error.description) }
    }

    /// The inode an entry puts in the tree: a new one, or a hard link's target.
    private func makeInode(_ item: LayerEntry, layer: String) throws(OCIError) -> Inode {
        let entry = item.entry
        func fail(_ reason: String) -> OCIError { .badTar(layer: layer, entry: displayBytes(entry.path), reason: reason) }
        let inode: Inode
        switch entry.kind {
        case .hardlink:
            return try linkTarget(of: entry, layer: layer)
        case .directory:
            inode = Inode(mode: FileMode.directory)
        case .regular:
            inode = Inode(mode: FileMode.regular)
            inode.size = entry.size
            try setContent(of: inode, entry: entry, content: item.content, fail: fail)
        case .symlink:
            inode = Inode(mode: FileMode.symlink)
            inode.payload = entry.linkTarget
            inode.size = UInt64(entry.linkTarget.count)
        case .characterDevice, .blockDevice:
            inode = Inode(mode: entry.kind == .characterDevice ? FileMode.characterDevice : FileMode.blockDevice)
            inode.rdev = Self.deviceNumber(major: entry.deviceMajor, minor: entry.deviceMinor)
        case .fifo:
            inode = Inode(mode: FileMode.fifo)
        }
        try setMetadata(of: inode, from: entry, layer: layer)
        return inode
    }

    private func setMetadata(of inode: Inode, from entry: TarEntry, layer: String) throws(OCIError) {
        inode.mode = inode.fileType | entry.permissions
        inode.uid = entry.uid
        inode.gid = entry.gid
        inode.mtime = entry.mtime
        inode.removeAllXattrs()
        for xattr in entry.xattrs {
            do { try inode.setXattr(xattr.key, xattr.value) } catch {
                throw .badTar(layer: layer, entry: displayBytes(entry.path), reason: error.description)
            }
        }
    }

    private func setContent(
        of inode: Inode, entry: TarEntry, content: EntryContent, fail: (String) -> OCIError
    ) throws(OCIError) {
        if entry.sparseMap != nil {
            let id = try expandSparse(entry, content)
            if entry.size <= UInt64(Limits.recommendedInlineContentMax) {
                throw fail("sparse file too small to be sparse")
            }
            inode.digest = id
            inode.payload = Array(id.objectPath.utf8)
            return
        }
        switch content {
        case .none:
            guard entry.size == 0 else { throw fail("file content is missing") }
        case let .inline(bytes):
            guard UInt64(bytes.count) == entry.size, bytes.count <= Limits.recommendedInlineContentMax else {
                throw fail("inline content does not match the file size")
            }
            inode.content = bytes
        case let .object(id):
            guard entry.size > UInt64(Limits.recommendedInlineContentMax) else { throw fail("small file stored as an object") }
            inode.digest = id
            inode.payload = Array(id.objectPath.utf8)
        }
    }

    /// The inode a hard link names: an existing non-directory, its parents directories.
    private func linkTarget(of entry: TarEntry, layer: String) throws(OCIError) -> Inode {
        func fail(_ reason: String) -> OCIError { .badTar(layer: layer, entry: displayBytes(entry.path), reason: reason) }
        let components = try Self.components(of: entry.linkTarget, layer: layer)
        let target = "'\(displayBytes(entry.linkTarget))'"
        guard let name = components.last else { throw fail("hard link to the root \(target)") }
        let parent: Inode
        do { parent = try directory(components.dropLast(), layer: layer, entry: entry.path) } catch {
            throw fail("hard link to missing target \(target)")
        }
        guard let inode = parent.entry(named: name)?.inode else { throw fail("hard link to missing target \(target)") }
        guard !inode.isDirectory else { throw fail("hard link to a directory \(target)") }
        return inode
    }

    /// Linux's dev_t encoding, truncated to the 32 bits composefs stores.
    static func deviceNumber(major: UInt32, minor: UInt32) -> UInt32 {
        (major & 0xFFF) << 8 | (minor & 0xFF) | (minor & 0xFFF00) << 12
    }
}

extension TarEntry {
    /// A member's path as composefs-rs shows it: "/" prepended (after dropping one already
    /// there), trailing "/" removed; nothing else is normalized.
    public static func absolutePath(_ path: [UInt8]) -> [UInt8] {
        var result = [UInt8(ascii: "/")] + (path.first == UInt8(ascii: "/") ? path.dropFirst() : path[...])
        while result.count > 1, result.last == UInt8(ascii: "/") { result.removeLast() }
        return result == [UInt8(ascii: "/")] ? [] : result
    }

    /// st_mode: the file type of the entry's kind with its permissions.
    public var mode: UInt32 {
        let type = switch kind {
        case .regular: FileMode.regular
        case .directory: FileMode.directory
        case .symlink: FileMode.symlink
        case .characterDevice: FileMode.characterDevice
        case .blockDevice: FileMode.blockDevice
        case .fifo, .hardlink: FileMode.fifo
        }
        return type | permissions
    }

    /// The device numbers as composefs stores them.
    public var deviceNumber: UInt32 { Rootfs.deviceNumber(major: deviceMajor, minor: deviceMinor) }
}
