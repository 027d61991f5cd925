// Merging layers into the root filesystem, with the OCI image-spec's rules (the tree `umoci
// unpack` makes on disk):
// - a whiteout ".wh.NAME" deletes NAME, and ".wh..wh..opq" empties its directory, of what the
//   layers below left; entries of the same layer are never hidden by them;
// - an entry replaces what was at its path, except that a directory over a directory only
//   takes its metadata and keeps the contents;
// - symlinks in the parent components of a path are followed inside the tree (never out of it);
// - hard links become files of their own with the target's metadata and content, as
//   mkcomposefs sees a tree with hard links.
// Nothing here touches the host file system: the tree is built in memory.

import ComposeFS
import ComposeFSBase
import EROFS
import FsVerity

package struct Rootfs {
    package let root: Inode
    let algorithm: FsVerityAlgorithm
    /// Makes the object of a sparse file's expanded content; returns its digest.
    let expandSparse: (_ entry: TarEntry, _ content: EntryContent) throws(OCIError) -> ObjectID

    static let whiteoutPrefix = Array(".wh.".utf8)
    static let opaqueMarker = Array(".wh..wh..opq".utf8)
    /// Symlinks followed while resolving one path, as the kernel allows.
    static let symlinkHopsMax = 40

    package init(
        algorithm: FsVerityAlgorithm,
        expandSparse: @escaping (_ entry: TarEntry, _ content: EntryContent) throws(OCIError) -> ObjectID
    ) {
        root = Inode(mode: FileMode.directory | 0o755)
        self.algorithm = algorithm
        self.expandSparse = expandSparse
    }

    /// Applies one layer.
    package mutating func apply(_ entries: [LayerEntry], layer: String) throws(OCIError) {
        var additions: [(components: [[UInt8]], item: LayerEntry)] = []
        // Whiteouts first: they only ever hide what lower layers left.
        for item in entries {
            let components = try Self.components(of: item.entry.path, layer: layer)
            guard let name = components.last, name.starts(with: Self.whiteoutPrefix) else {
                additions.append((components, item))
                continue
            }
            let parentPath = Array(components.dropLast())
            guard let parent = try lookupDirectory(parentPath, layer: layer, entry: item.entry.path) else { continue }
            if name == Self.opaqueMarker {
                for child in parent.entries.map(\.name) { parent.removeEntry(child) }
            } else if !name.starts(with: Self.opaqueMarker.prefix(8)) {
                // ".wh..wh.*" markers other than opaque (aufs bookkeeping) carry nothing.
                parent.removeEntry(Array(name.dropFirst(Self.whiteoutPrefix.count)))
            }
        }
        for (components, item) in additions {
            try add(item, components: components, layer: layer)
        }
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

    /// The directory at `components`, following symlinks in every component; nil if missing.
    private func lookupDirectory(_ components: [[UInt8]], layer: String, entry: [UInt8]) throws(OCIError) -> Inode? {
        var hops = 0
        return try resolve(components, layer: layer, entry: entry, create: false, hops: &hops)
    }

    /// Walks `components` from the root. Symlinks are followed (absolute targets from the
    /// root, ".." never above it); with `create`, missing directories are made.
    private func resolve(
        _ components: [[UInt8]], layer: String, entry: [UInt8], create: Bool, hops: inout Int
    ) throws(OCIError) -> Inode? {
        func fail(_ reason: String) -> OCIError { .badTar(layer: layer, entry: displayBytes(entry), reason: reason) }
        var stack: [Inode] = [root]
        var pending = Array(components.reversed())
        while let name = pending.popLast() {
            guard let current = stack.last else { return nil }
            if name == [0x2E] { continue }
            if name == [0x2E, 0x2E] {
                if stack.count > 1 { stack.removeLast() }
                continue
            }
            guard let child = current.entry(named: name)?.inode else {
                guard create else { return nil }
                let directory = Inode(mode: FileMode.directory | 0o755)
                do { try current.addEntry(name, directory) } catch { throw fail(error.description) }
                stack.append(directory)
                continue
            }
            if child.isSymlink {
                hops += 1
                guard hops <= Self.symlinkHopsMax else { throw fail("too many levels of symbolic links") }
                let target = child.payload ?? []
                if target.first == UInt8(ascii: "/") { stack = [root] }
                let parts = target.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map(Array.init)
                pending.append(contentsOf: parts.reversed())
                continue
            }
            guard child.isDirectory else {
                if create { throw fail("a parent component is not a directory") }
                return nil
            }
            stack.append(child)
        }
        return stack.last
    }

    // MARK: Entries

    private mutating func add(_ item: LayerEntry, components: [[UInt8]], layer: String) throws(OCIError) {
        let entry = item.entry
        func fail(_ reason: String) -> OCIError { .badTar(layer: layer, entry: displayBytes(entry.path), reason: reason) }
        guard let name = components.last else {
            // The root itself: only a directory may describe it.
            guard entry.kind == .directory else { throw fail("the root can only be a directory") }
            try setMetadata(of: root, from: entry, layer: layer)
            return
        }
        var hops = 0
        guard let parent = try resolve(Array(components.dropLast()), layer: layer, entry: entry.path, create: true, hops: &hops) else {
            throw fail("parent directory cannot be resolved")
        }
        let existing = parent.entry(named: name)?.inode
        if entry.kind == .directory, let existing, existing.isDirectory {
            try setMetadata(of: existing, from: entry, layer: layer)
            return
        }
        let inode: Inode
        switch entry.kind {
        case .hardlink:
            inode = try linkTarget(of: entry, layer: layer)
            // A link to itself changes nothing.
            if let existing, inode === existing { return }
            let copy = Self.copy(of: inode)
            if existing != nil { parent.removeEntry(name) }
            do { try parent.addEntry(name, copy) } catch { throw fail(error.description) }
            return
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
        if existing != nil { parent.removeEntry(name) }
        do { try parent.addEntry(name, inode) } catch { throw fail(error.description) }
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

    /// The inode a hard link names: parents resolved through symlinks, the last component not.
    private func linkTarget(of entry: TarEntry, layer: String) throws(OCIError) -> Inode {
        func fail(_ reason: String) -> OCIError { .badTar(layer: layer, entry: displayBytes(entry.path), reason: reason) }
        let components = try Self.components(of: entry.linkTarget, layer: layer)
        guard let name = components.last,
            let parent = try lookupDirectory(Array(components.dropLast()), layer: layer, entry: entry.path),
            let target = parent.entry(named: name)?.inode
        else { throw fail("hard link to missing target '\(displayBytes(entry.linkTarget))'") }
        guard !target.isDirectory else { throw fail("hard link to a directory '\(displayBytes(entry.linkTarget))'") }
        return target
    }

    private static func copy(of inode: Inode) -> Inode {
        let copy = Inode(mode: inode.mode)
        copy.uid = inode.uid
        copy.gid = inode.gid
        copy.rdev = inode.rdev
        copy.size = inode.size
        copy.mtime = inode.mtime
        copy.payload = inode.payload
        copy.content = inode.content
        copy.digest = inode.digest
        for xattr in inode.xattrs { try? copy.setXattr(xattr.key, xattr.value) }
        return copy
    }

    /// Linux's dev_t encoding, truncated to the 32 bits composefs stores.
    static func deviceNumber(major: UInt32, minor: UInt32) -> UInt32 {
        (major & 0xFFF) << 8 | (minor & 0xFF) | (minor & 0xFFF00) << 12
    }
}

extension TarEntry {
    /// The components of a member's path, as the merge resolves them ("." and empty parts
    /// dropped); nil for a path with ".." or an over-long name, which the merge refuses.
    public static func components(of path: [UInt8]) -> [[UInt8]]? { try? Rootfs.components(of: path, layer: "") }

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
