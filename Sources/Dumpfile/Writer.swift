// Writes a tree as a composefs-dump(5) file, byte for byte as the reference
// `composefs-info dump` prints it:
//   PATH SIZE [@]MODE NLINK UID GID RDEV SEC.NSEC PAYLOAD CONTENT DIGEST [XATTR=VALUE...]
// Hard links print '@', the fields of their inode and the path of its primary entry.
// Also the `composefs-info ls` listing, which walks and escapes the same way.

import ComposeFS
import ComposeFSBase

public enum DumpfileWriter {
    /// Output is handed out in chunks of about this size.
    static let chunkSize = 64 * 1024

    /// Writes the dump of `root`, depth-first with children in entry order.
    public static func write(root: Inode, to output: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        try write(subtree: root, at: [UInt8(ascii: "/")], isHardlink: false, root: root, to: output)
    }

    /// The lines of the entry at `path` (absolute, unescaped) and, for a directory, of
    /// everything below it, as `write` prints them for the whole of `root`.
    public static func write(
        subtree inode: Inode, at path: [UInt8], isHardlink: Bool, root: Inode,
        to output: (UnsafeRawBufferPointer) throws -> Void
    ) rethrows {
        let primaryPaths = primaryPaths(root)
        var escapedPath: [UInt8] = []
        Escaping.escape(path, style: [], into: &escapedPath)
        var buffer: [UInt8] = []
        buffer.reserveCapacity(chunkSize + 4096)
        writeLine(inode, path: escapedPath, primaryPath: isHardlink ? primaryPaths[ObjectIdentifier(inode)] : nil, into: &buffer)
        if inode.isDirectory && !isHardlink {
            // Paths below "/" must not start with "//".
            let prefix = path == [UInt8(ascii: "/")] ? [] : escapedPath
            try forEachEntry(inode, style: [], prefix: prefix) { entry, childPath in
                let primary = entry.isHardlink ? primaryPaths[ObjectIdentifier(entry.inode)] : nil
                writeLine(entry.inode, path: childPath, primaryPath: primary, into: &buffer)
                if buffer.count >= chunkSize {
                    try buffer.withUnsafeBytes { try output($0) }
                    buffer.removeAll(keepingCapacity: true)
                }
            }
        }
        try buffer.withUnsafeBytes { try output($0) }
    }

    // MARK: composefs-rs's form

    /// The dump of `inode` at `path` (a directory with everything below it) as composefs-rs
    /// 0.9 prints it (`cfsctl create-dumpfile`, `dump-files`): directories have size 0, xattrs
    /// are sorted, and an inode met again is a line `PATH 0 @120000 - - - - 0.0 FIRST - -`
    /// naming where it was first printed. Child paths are built as Rust's `PathBuf` push and
    /// pop build them (so `dir//` lists `dir//first`, then `dir/second`).
    public static func writeComposefsRS(
        _ inode: Inode, at path: [UInt8], to output: (UnsafeRawBufferPointer) throws -> Void
    ) rethrows {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(chunkSize + 4096)
        var printed: [ObjectIdentifier: [UInt8]] = [:]
        var path = path
        func line(_ inode: Inode) {
            var escaped: [UInt8] = []
            Escaping.escape(path, style: .loneDash, into: &escaped)
            if !inode.isDirectory, let first = printed[ObjectIdentifier(inode)] {
                buffer += escaped + Array(" 0 @120000 - - - - 0.0 ".utf8) + first + Array(" - -\n".utf8)
                return
            }
            if !inode.isDirectory && inode.nlink > 1 { printed[ObjectIdentifier(inode)] = escaped }
            writeLine(inode, path: escaped, primaryPath: nil, rsForm: true, into: &buffer)
        }
        line(inode)
        guard inode.isDirectory else { return try buffer.withUnsafeBytes { try output($0) } }
        // Depth first; each level remembers its next entry.
        var stack = [inode.entries[...]]
        while let top = stack.indices.last {
            guard let entry = stack[top].popFirst() else {
                stack.removeLast()
                if !stack.isEmpty { RustPath.pop(&path) }
                continue
            }
            RustPath.push(&path, entry.name)
            line(entry.inode)
            if entry.inode.isDirectory {
                stack.append(entry.inode.entries[...])
            } else {
                RustPath.pop(&path)
            }
            if buffer.count >= chunkSize {
                try buffer.withUnsafeBytes { try output($0) }
                buffer.removeAll(keepingCapacity: true)
            }
        }
        try buffer.withUnsafeBytes { try output($0) }
    }

    /// The whole dump in memory.
    public static func dump(root: Inode) -> [UInt8] {
        var text: [UInt8] = []
        write(root: root) { text.append(contentsOf: $0) }
        return text
    }

    /// The `composefs-info ls` listing: paths (spaces unescaped), "/" after
    /// directories, the target of symlinks and the backing file of regular files.
    /// Hard links show only their path.
    public static func writeListing(root: Inode, to output: (UnsafeRawBufferPointer) throws -> Void) rethrows {
        let directory = Array("/\t".utf8)
        let symlink = Array("\t-> ".utf8)
        let backed = Array("\t@ ".utf8)
        var buffer: [UInt8] = []
        buffer.reserveCapacity(chunkSize + 4096)
        try forEachEntry(root, style: .keepSpace) { entry, path in
            buffer.append(contentsOf: path)
            let inode = entry.inode
            if !entry.isHardlink {
                if inode.isDirectory {
                    buffer.append(contentsOf: directory)
                } else if inode.isSymlink {
                    buffer.append(contentsOf: symlink)
                    Escaping.escape(inode.payload ?? [], into: &buffer)
                } else if inode.isRegular, let payload = inode.payload {
                    buffer.append(contentsOf: backed)
                    Escaping.escape(payload, into: &buffer)
                }
            }
            buffer.append(UInt8(ascii: "\n"))
            if buffer.count >= chunkSize {
                try buffer.withUnsafeBytes { try output($0) }
                buffer.removeAll(keepingCapacity: true)
            }
        }
        try buffer.withUnsafeBytes { try output($0) }
    }

    /// The escaped path of the primary entry of every hard-linked inode. (In a tree
    /// where all entries of an inode are hard links there is none; they are printed
    /// as plain entries.)
    static func primaryPaths(_ root: Inode) -> [ObjectIdentifier: [UInt8]] {
        var linked = Set<ObjectIdentifier>()
        var directories = [root]
        while let directory = directories.popLast() {
            for entry in directory.entries {
                if entry.isHardlink {
                    linked.insert(ObjectIdentifier(entry.inode))
                } else if entry.inode.isDirectory {
                    directories.append(entry.inode)
                }
            }
        }
        var paths: [ObjectIdentifier: [UInt8]] = [:]
        guard !linked.isEmpty else { return paths }
        forEachEntry(root, style: []) { entry, path in
            let id = ObjectIdentifier(entry.inode)
            if !entry.isHardlink && linked.contains(id) && paths[id] == nil { paths[id] = path }
        }
        return paths
    }

    /// Visits every entry depth-first in entry order (not descending into hard
    /// links) with its path, escaped in `style`. Iterative: the depth of a tree
    /// from a dumpfile is not bounded.
    private static func forEachEntry(
        _ root: Inode, style: EscapeStyle, prefix: [UInt8] = [], _ body: (DirectoryEntry, [UInt8]) throws -> Void
    ) rethrows {
        var stack = [root.entries[...]]
        var path = prefix
        // Where the path of each directory on the stack, but the root, ends.
        var levelStarts: [Int] = []
        while let top = stack.indices.last {
            guard let entry = stack[top].popFirst() else {
                stack.removeLast()
                if let start = levelStarts.popLast() { path.removeSubrange(start...) }
                continue
            }
            let parentLength = path.count
            path.append(UInt8(ascii: "/"))
            Escaping.escape(entry.name, style: style, into: &path)
            try body(entry, path)
            if !entry.isHardlink && entry.inode.isDirectory {
                stack.append(entry.inode.entries[...])
                levelStarts.append(parentLength)
            } else {
                path.removeSubrange(parentLength...)
            }
        }
    }

    /// One line; `path` is already escaped. In composefs-rs's form (`rsForm`) a directory's
    /// size is 0 and its nlink 2 plus its subdirectories, whatever the tree says, and xattrs
    /// are sorted.
    private static func writeLine(
        _ inode: Inode, path: [UInt8], primaryPath: [UInt8]?, rsForm: Bool = false, into line: inout [UInt8]
    ) {
        let space = UInt8(ascii: " ")
        line.append(contentsOf: path)
        line.append(space)
        let rsDirectory = rsForm && inode.isDirectory
        appendDecimal(rsDirectory ? 0 : inode.size, to: &line)
        line.append(space)
        if primaryPath != nil { line.append(UInt8(ascii: "@")) }
        appendOctal(inode.mode, to: &line)
        let nlink = rsDirectory ? 2 + UInt64(inode.entries.count { $0.inode.isDirectory }) : UInt64(inode.nlink)
        for value in [nlink, UInt64(inode.uid), UInt64(inode.gid), UInt64(inode.rdev)] {
            line.append(space)
            appendDecimal(value, to: &line)
        }
        line.append(space)
        if inode.mtime.seconds < 0 { line.append(UInt8(ascii: "-")) }
        appendDecimal(inode.mtime.seconds.magnitude, to: &line)
        line.append(UInt8(ascii: "."))
        appendDecimal(UInt64(inode.mtime.nanoseconds), to: &line)
        line.append(space)
        // composefs-rs has no backing file for inline content, so no path or digest for it.
        let inlineOnly = rsForm && inode.content != nil
        if let primaryPath {
            line.append(contentsOf: primaryPath)
        } else {
            Escaping.escapeOptional(inlineOnly ? nil : inode.payload, style: .loneDash, into: &line)
        }
        line.append(space)
        if let content = inode.content {
            Escaping.escape(content.prefix(Int(clamping: inode.size)), style: .loneDash, into: &line)
        } else {
            line.append(UInt8(ascii: "-"))
        }
        line.append(space)
        if let digest = inode.digest, !inlineOnly {
            Hex.append(digest.bytes, to: &line)
        } else {
            line.append(UInt8(ascii: "-"))
        }
        for xattr in rsForm ? inode.xattrs.sorted(by: { compareBytes($0.key, $1.key) < 0 }) : inode.xattrs {
            line.append(space)
            Escaping.escape(xattr.key, style: .equals, into: &line)
            line.append(UInt8(ascii: "="))
            Escaping.escape(xattr.value, style: .equals, into: &line)
        }
        line.append(UInt8(ascii: "\n"))
    }

    // Formatting numbers by hand: String(describing:) allocates per field.
    private static func appendDecimal(_ value: UInt64, to out: inout [UInt8]) {
        appendDigits(value, radix: 10, to: &out)
    }

    private static func appendOctal(_ value: UInt32, to out: inout [UInt8]) {
        appendDigits(UInt64(value), radix: 8, to: &out)
    }

    private static func appendDigits(_ value: UInt64, radix: UInt64, to out: inout [UInt8]) {
        var count = 1
        var rest = value / radix
        while rest > 0 {
            count += 1
            rest /= radix
        }
        out.append(contentsOf: repeatElement(UInt8(ascii: "0"), count: count))
        var v = value
        var i = out.count
        while v > 0 {
            i -= 1
            out[i] = UInt8(ascii: "0") + UInt8(v % radix)
            v /= radix
        }
    }
}

/// Rust's `PathBuf::push` and `pop` on bytes, for paths as composefs-rs prints them.
enum RustPath {
    static let slash = UInt8(ascii: "/")

    /// Appends a component, with a separator unless the path is empty or ends in one.
    static func push(_ path: inout [UInt8], _ component: [UInt8]) {
        if !path.isEmpty && path.last != slash { path.append(slash) }
        path += component
    }

    /// Truncates to the parent: the path without its last component and the separators
    /// before it ("/" stays "/", a lone relative component becomes empty).
    static func pop(_ path: inout [UInt8]) {
        var end = path.count
        while end > 1 && path[end - 1] == slash { end -= 1 }
        while end > 0 && path[end - 1] != slash { end -= 1 }
        while end > 1 && path[end - 1] == slash { end -= 1 }
        path.removeSubrange(end...)
    }
}
