// What composefs-rs 0.9 does to a tree before it becomes a container's root image
// (`transform_for_oci`): the root takes /usr's metadata, /run is emptied, and only allow-listed
// xattrs stay. And its link accounting: hard links kept, each inode's nlink the number of
// entries that name it in the final tree, the first of them in sorted depth-first order its
// primary entry.

import ComposeFSBase
import EROFS

/// Which xattrs a container root keeps.
public enum XattrFilter: String, Sendable, CaseIterable {
    /// Only `security.capability`.
    case allowlistOnly = "allowlist-only"
    /// `security.capability` and every `user.*` name.
    case keepUserXattrs = "keep-user-xattrs"

    static let allowlist = [Array("security.capability".utf8)]
    static let userPrefix = Array("user.".utf8)

    func keeps(_ key: [UInt8]) -> Bool {
        Self.allowlist.contains(key) || (self == .keepUserXattrs && key.starts(with: Self.userPrefix))
    }
}

/// A tree that cannot be a container root.
public struct ContainerRootError: Error, Equatable, Sendable, CustomStringConvertible {
    public var description: String
}

public enum ContainerRoot {
    /// composefs-rs's `transform_for_oci`, in its order: /usr's mode, owner, mtime and xattrs
    /// to the root; /run emptied with /usr's mtime; the xattr filter on every inode. /usr must
    /// be a directory, and /run one if it exists.
    public static func prepare(_ root: Inode, xattrs: XattrFilter) throws(ContainerRootError) {
        let usr = try directory(root, "usr")
        root.mode = FileMode.directory | (usr.mode & 0o7777)
        root.uid = usr.uid
        root.gid = usr.gid
        root.mtime = usr.mtime
        root.replaceXattrs(with: usr.xattrList)
        if root.entry(named: Array("run".utf8)) != nil {
            let run = try directory(root, "run")
            run.mtime = usr.mtime
            run.removeAllEntries()
        }
        forEachInode(root) { $0.filterXattrs(xattrs.keeps) }
    }

    /// composefs-rs's boot transform before SELinux labelling (`empty_toplevel_dirs`): /boot
    /// and /sysroot (both required) emptied, their mtime seconds set to /usr's.
    public static func prepareBoot(_ root: Inode) throws(ContainerRootError) {
        let usr = try directory(root, "usr")
        for name in ["boot", "sysroot"] {
            let emptied = try directory(root, name)
            emptied.mtime.seconds = usr.mtime.seconds
            emptied.removeAllEntries()
        }
    }

    /// The directory `name` of `parent`, with composefs-rs's messages when it is not one.
    public static func directory(_ parent: Inode, _ name: String) throws(ContainerRootError) -> Inode {
        guard let entry = parent.entry(named: Array(name.utf8)) else {
            throw ContainerRootError(description: "Directory entry \"\(name)\" does not exist")
        }
        guard entry.inode.isDirectory, !entry.isHardlink else {
            throw ContainerRootError(description: "Directory entry \"\(name)\" is not a subdirectory")
        }
        return entry.inode
    }

    /// Hard links as composefs-rs counts them: every inode's nlink is the number of entries
    /// naming it, and the first of those in sorted depth-first order is its primary entry.
    public static func countLinks(_ root: Inode) {
        var references: [ObjectIdentifier: UInt32] = [:]
        // Depth first, entries in name order, into each directory as it is met.
        var stack: [(directory: Inode, next: Int)] = [(root, 0)]
        while let top = stack.indices.last {
            let (directory, index) = stack[top]
            guard index < directory.entries.count else {
                stack.removeLast()
                continue
            }
            stack[top].next += 1
            let inode = directory.entries[index].inode
            if inode.isDirectory {
                stack.append((inode, 0))
                continue
            }
            let count = references[ObjectIdentifier(inode), default: 0]
            directory.setHardlink(at: index, count > 0)
            references[ObjectIdentifier(inode)] = count + 1
        }
        forEachInode(root) { inode in
            if !inode.isDirectory { inode.nlink = references[ObjectIdentifier(inode)] ?? 1 }
        }
    }

    /// The overlayfs whiteout and opaque markers as an image reads back (`trusted.overlay.X`
    /// unescaped, `user.overlay.X`), which composefs-rs leaves out of the trees it reads
    /// from images, whoever put them there.
    static let overlayMarkers: Set<[UInt8]> = Set(
        ["trusted.overlay.", "user.overlay."].flatMap { prefix in ["whiteout", "whiteouts", "opaque"].map { Array((prefix + $0).utf8) } })

    /// Removes the overlay markers from every inode, giving the tree composefs-rs reads from an
    /// image (what `cfsctl dump-files` prints).
    public static func removeOverlayMarkers(_ root: Inode) {
        forEachInode(root) { $0.filterXattrs { !overlayMarkers.contains($0) } }
    }

    /// Calls `body` once for every inode of the tree.
    public static func forEachInode(_ root: Inode, _ body: (Inode) -> Void) {
        var seen = Set<ObjectIdentifier>()
        var stack = [root]
        while let inode = stack.popLast() {
            guard seen.insert(ObjectIdentifier(inode)).inserted else { continue }
            body(inode)
            for entry in inode.entries { stack.append(entry.inode) }
        }
    }
}
