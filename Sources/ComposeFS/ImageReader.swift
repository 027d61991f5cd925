// Reads a composefs EROFS image back into a tree, producing what the reference libcomposefs
// reader produces: the overlay xattrs the writer added are turned back into payloads,
// digests and whiteouts, and escaped ones are unescaped.
//
// Format 2 (composefs-rs's) has no stubs and no escaped whiteouts: its whiteouts are
// character devices 0/0, kept wherever they are (composefs-rs's reader drops those with
// two-hex-digit names at the root, taking them for stubs; a real one would be lost), and
// overlay xattrs other than the metacopy and redirect are the user's own, kept unescaped.
//
// Images are untrusted input. Decoding goes through the bounds-checked `ImageView`; on top of
// it each inode is visited once, the depth is capped, and the total metadata decoded is
// bounded by the image size, so a hostile image fails cleanly in linear time.

import ComposeFSBase
import EROFS
import FsVerity

public enum ImageReader {
    /// Directory nesting limit (PATH_MAX allows at most 2048 levels of real paths).
    public static let maxDepth = 4096

    /// The composefs format version recorded in the image header.
    public static func version(of image: UnsafeRawBufferPointer) throws(ImageFormatError) -> UInt32 {
        try ImageView.header(of: image).composefsVersion
    }

    /// Decodes the tree of an image. With a `filter`, only root entries whose name is
    /// in it are loaded (with everything below them).
    public static func read(_ image: UnsafeRawBufferPointer, filter: Set<[UInt8]>? = nil) throws(ImageFormatError) -> Inode {
        var loader = Loader(view: try ImageView(image))
        return try loader.load(filter: filter)
    }

    public static func read(_ image: [UInt8], filter: Set<[UInt8]>? = nil) throws(ImageFormatError) -> Inode {
        try withBytes(image) { (bytes) throws(ImageFormatError) in try read(bytes, filter: filter) }
    }
}

/// The decoding state of one image.
private struct Loader {
    /// What a nid turned out to be, so later references need no decoding.
    enum Visited {
        case file(Inode)
        case directory
        case whiteout
    }

    /// A directory whose entries are being loaded.
    struct Frame {
        let inode: Inode
        let nid: UInt64
        let entries: [(name: [UInt8], nid: UInt64)]
        var next = 0
    }

    let view: ImageView
    /// Format 2 stores whiteouts as they are (no stubs, no escaping).
    let nativeWhiteouts: Bool
    var visited: [UInt64: Visited] = [:]
    /// Bytes of inodes, xattr areas and data still allowed to be decoded. In a valid
    /// image these never overlap, so their total is at most the image size; a hostile
    /// image reusing them (say, many directories sharing one block) runs out instead
    /// of making the reader do quadratic work.
    var budget: Int

    init(view: ImageView) {
        self.view = view
        nativeWhiteouts = view.composefsVersion >= 2
        budget = view.image.count
    }

    /// Counts decoded bytes against the budget.
    mutating func charge(_ count: Int, _ nid: UInt64) throws(ImageFormatError) {
        budget -= count
        guard budget >= 0 else {
            throw .invalid("inode \(nid): inodes and data add up to more than the image size (overlapping structures)")
        }
    }

    // MARK: Tree walk

    /// Loads the tree depth-first in directory order, so the first entry met for an
    /// inode is its primary one, as in the reference. Iterative: depth is untrusted.
    mutating func load(filter: Set<[UInt8]>?) throws(ImageFormatError) -> Inode {
        let rootNid = view.rootNid
        guard let (root, rootInfo) = try loadInode(rootNid) else {
            throw .invalid("root inode \(rootNid) is a whiteout")
        }
        guard root.isDirectory else { throw .invalid("root inode \(rootNid) is not a directory") }
        var stack = [Frame(inode: root, nid: rootNid, entries: try directoryEntries(rootInfo, filter: filter))]
        while let top = stack.indices.last {
            guard stack[top].next < stack[top].entries.count else {
                stack.removeLast()
                continue
            }
            let (name, nid) = stack[top].entries[stack[top].next]
            stack[top].next += 1
            let parent = stack[top]
            func add(_ inode: Inode, hardlink: Bool) throws(ImageFormatError) {
                do throws(TreeError) {
                    try parent.inode.addEntry(name, inode, isHardlink: hardlink)
                } catch {
                    throw .invalid("directory inode \(parent.nid): \(error.description)")
                }
            }
            switch visited[nid] {
            case let .file(inode)?:
                try add(inode, hardlink: true)
            case .directory?:
                throw .invalid("directory inode \(nid) is reached twice (a loop or a hard-linked directory)")
            case .whiteout?:
                break
            case nil:
                guard let (child, info) = try loadInode(nid) else { break }
                try add(child, hardlink: false)
                if child.isDirectory {
                    guard stack.count < ImageReader.maxDepth else {
                        throw .invalid("directories are nested more than \(ImageReader.maxDepth) levels deep")
                    }
                    stack.append(Frame(inode: child, nid: nid, entries: try directoryEntries(info, filter: nil)))
                }
            }
        }
        return root
    }

    // MARK: Inodes

    /// Decodes an inode, except a directory's entries. Returns nil for a real whiteout (a
    /// character device 0/0) before format 2, which is left out: those are the stubs
    /// composefs adds to the root itself.
    mutating func loadInode(_ nid: UInt64) throws(ImageFormatError) -> (Inode, InodeInfo)? {
        func fail(_ message: String) -> ImageFormatError { .invalid("inode \(nid): \(message)") }
        let info = try view.inode(nid)
        let inode = Inode(mode: info.mode)
        if inode.isDevice { inode.rdev = info.union }
        if inode.isWhiteout && !nativeWhiteouts {
            visited[nid] = .whiteout
            return nil
        }
        visited[nid] = inode.isDirectory ? .directory : .file(inode)
        inode.nlink = info.nlink
        inode.uid = info.uid
        inode.gid = info.gid
        inode.size = info.size
        inode.mtime = Timestamp(seconds: Int64(bitPattern: info.mtime), nanoseconds: info.mtimeNsec)

        try charge(info.header.encodedSize + info.xattrSize, nid)
        switch inode.fileType {
        case FileMode.symlink:
            guard info.size < UInt64(Limits.pathMax) else { throw fail("symlink target of \(info.size) bytes is too long") }
            try charge(Int(info.size), nid)
            var target = try view.data(info)
            truncateAtNul(&target)
            inode.payload = target
        case FileMode.regular where info.size > 0:
            switch info.layout {
            case .flatPlain?, .flatInline?:
                guard info.size <= UInt64(min(Limits.inlineContentMax, view.image.count)) else {
                    throw fail("inline content of \(info.size) bytes is too large")
                }
                try charge(Int(info.size), nid)
                inode.content = try view.data(info)
            case .chunkBased?:
                break  // A backing file: its chunks are holes.
            default:
                throw .unsupported("inode \(nid): unsupported data layout \(info.header.dataLayout)")
            }
        default:
            break
        }
        try loadXattrs(into: inode, info)
        return (inode, info)
    }

    // MARK: Directories

    /// A directory's entries in on-disk order, without "." and "..".
    mutating func directoryEntries(_ info: InodeInfo, filter: Set<[UInt8]>?) throws(ImageFormatError) -> [(name: [UInt8], nid: UInt64)] {
        guard info.size <= UInt64(view.image.count) else {
            throw .invalid("inode \(info.nid): directory size \(info.size) is larger than the image")
        }
        try charge(Int(info.size), info.nid)
        var entries: [(name: [UInt8], nid: UInt64)] = []
        try view.forEachDirent(info) { record in
            let name = Array(record.name)
            if name == [0x2E] || name == [0x2E, 0x2E] { return true }
            if let filter, !filter.contains(name) { return true }
            entries.append((name, record.nid))
            return true
        }
        return entries
    }

    // MARK: Xattrs

    /// Inline xattrs, then shared ones, translated as the reference does.
    func loadXattrs(into inode: Inode, _ info: InodeInfo) throws(ImageFormatError) {
        try view.forEachXattr(info) { (record) throws(ImageFormatError) in
            guard Int(record.index) < EROFSXattrPrefix.prefixes.count else {
                throw .invalid("inode \(info.nid): unknown xattr name index \(record.index)")
            }
            // The prefix named by the index, then the stored suffix; names are C strings to the reference.
            var key = EROFSXattrPrefix.prefixes[Int(record.index)] + Array(record.name)
            truncateAtNul(&key)
            try apply(key, Array(record.value), to: inode, nid: info.nid)
            return true
        }
    }

    /// Undoes the writer's overlay xattrs: redirect → payload, metacopy → digest,
    /// escaped whiteout → whiteout device (before format 2); other trusted.overlay.overlay.X
    /// are unescaped and the remaining trusted.overlay.* dropped. The order of the
    /// xattrs matters (a whiteout takes no later payload), as in the reference.
    func apply(_ key: [UInt8], _ value: [UInt8], to inode: Inode, nid: UInt64) throws(ImageFormatError) {
        if key == OverlayXattr.redirect {
            if inode.isRegular {
                // The writer prefixes the object path with '/'.
                var path = value.count > 1 && value[0] == UInt8(ascii: "/") ? Array(value.dropFirst()) : value
                truncateAtNul(&path)
                inode.payload = path
            }
            return
        }
        if key == OverlayXattr.metacopy {
            // A digest of a size no algorithm has is ignored, as the reference does.
            if inode.isRegular, let metacopy = OverlayMetacopy(decoding: value), let digest = ObjectID(digest: metacopy.digest) {
                inode.digest = digest
            }
            return
        }
        if !nativeWhiteouts {
            if key == OverlayXattr.escapedWhiteout && inode.isRegular {
                inode.mode = FileMode.characterDevice | (inode.mode & ~FileMode.typeMask)
                inode.rdev = 0
                inode.size = 0
                inode.content = nil
                return
            }
            if key == OverlayXattr.escapedWhiteouts || key == OverlayXattr.userWhiteout || key == OverlayXattr.userWhiteouts {
                return
            }
        }
        var name = key
        if key.starts(with: OverlayXattr.prefix) {
            guard key.starts(with: OverlayXattr.escapePrefix) else { return }
            name = OverlayXattr.prefix + key[OverlayXattr.escapePrefix.count...]
        }
        do throws(TreeError) {
            try inode.setXattr(name, value, external: false)
        } catch {
            throw .invalid("inode \(nid): \(error.description)")
        }
    }
}

private func truncateAtNul(_ bytes: inout [UInt8]) {
    if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
}
