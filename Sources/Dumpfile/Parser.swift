// Parser for composefs-dump(5) files: one line per file,
//   PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [XATTR...]
// accepting what the reference mkcomposefs accepts (and rejecting, with a
// message naming the line, what it rejects or silently mangles).

import ComposeFS
import ComposeFSBase
import EROFS
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

public struct DumpfileError: Error, CustomStringConvertible {
    public enum Reason: Error, Equatable, CustomStringConvertible {
        case badEscape(String)
        case invalid(String)
        case tree(TreeError)
        case io(String)

        public var description: String {
            switch self {
            case let .badEscape(m), let .invalid(m), let .io(m): return m
            case let .tree(e): return e.description
            }
        }
    }

    /// 1-based line number, 0 when the error concerns the file as a whole.
    public var line: Int
    public var path: [UInt8]?
    public var reason: Reason

    public var description: String {
        var s = line > 0 ? "line \(line)" : ""
        if let path { s += (s.isEmpty ? "" : ": ") + displayBytes(path) }
        return s + (s.isEmpty ? "" : ": ") + reason.description
    }
}

public struct DumpfileParser {
    /// CFS_PARSE_STRICT: also reject non-zero rdev on non-devices, symlink sizes that
    /// differ from the target length, symlink content and a missing final newline.
    public let strict: Bool
    public private(set) var root: Inode?
    private var lineNumber = 0
    private var pendingLinks: [PendingLink] = []
    /// Dumpfiles list siblings together: remember the last parent directory looked up.
    private var cachedParentPath: [UInt8] = []
    private var cachedParent: Inode?

    /// A hard link line, resolved once every line has been read.
    private struct PendingLink {
        let line: Int
        let path: [UInt8]
        let parent: Inode
        let name: [UInt8]
        let placeholder: Inode
        let target: [UInt8]
    }

    public init(strict: Bool = false) {
        self.strict = strict
    }

    /// Whether CFS_PARSE_STRICT is set in the environment, as the reference checks.
    public static var strictFromEnvironment: Bool { getenv("CFS_PARSE_STRICT") != nil }

    // MARK: Whole inputs

    public static func parse(_ text: [UInt8], strict: Bool = false) throws(DumpfileError) -> Inode {
        var parser = DumpfileParser(strict: strict)
        try withBytes(text) { (buffer) throws(DumpfileError) in
            var reader = LineSplitter()
            try reader.feed(buffer, final: true) { (line, terminated) throws(DumpfileError) in
                try parser.parseLine(line, terminated: terminated)
            }
        }
        return try parser.finish()
    }

    /// Parses a dumpfile streamed from a file descriptor.
    public static func parse(fileDescriptor fd: Int32, strict: Bool = false) throws(DumpfileError) -> Inode {
        var parser = DumpfileParser(strict: strict)
        var splitter = LineSplitter()
        let chunkSize = 1 << 20
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { chunk.deallocate() }
        while true {
            let n: Int
            do { n = try readSome(fd, into: chunk, path: "") } catch {
                throw DumpfileError(line: 0, reason: .io("read error: " + SystemError.message(error.code)))
            }
            try splitter.feed(UnsafeRawBufferPointer(rebasing: chunk[0..<n]), final: n == 0) {
                (line, terminated) throws(DumpfileError) in
                try parser.parseLine(line, terminated: terminated)
            }
            if n == 0 { break }
        }
        return try parser.finish()
    }

    // MARK: Lines

    /// Parses one line (without its newline). `terminated` is false for a final line
    /// that had no newline.
    public mutating func parseLine(_ line: UnsafeRawBufferPointer, terminated: Bool = true) throws(DumpfileError) {
        lineNumber += 1
        if !terminated && strict {
            throw DumpfileError(line: lineNumber, reason: .invalid("missing trailing newline"))
        }
        var path: [UInt8]?
        do throws(DumpfileError.Reason) {
            try parseFields(line, path: &path)
        } catch {
            throw DumpfileError(line: lineNumber, path: path, reason: error)
        }
    }

    private mutating func parseFields(_ line: UnsafeRawBufferPointer, path pathOut: inout [UInt8]?) throws(DumpfileError.Reason) {
        if let nul = line.firstIndex(of: 0) {
            throw .invalid("invalid embedded NUL character at position \(nul)")
        }
        var fields = FieldSplitter(line)
        let pathField = fields.next()
        let sizeField = fields.next()
        var modeField = fields.next()
        let nlinkField = fields.next()
        let uidField = fields.next()
        let gidField = fields.next()
        let rdevField = fields.next()
        let mtimeField = fields.next()
        let payloadField = fields.next()
        let contentField = fields.next()
        let digestField = fields.next()

        let path = try Escaping.unescape(pathField)
        guard !path.isEmpty else { throw .invalid("invalid empty path") }
        pathOut = path

        let isHardlink = modeField.first == UInt8(ascii: "@")
        if isHardlink { modeField = UnsafeRawBufferPointer(rebasing: modeField.dropFirst()) }
        let mode = UInt32(truncatingIfNeeded: try parseInteger(modeField, base: 8, name: "mode"))
        guard FileMode.isValidType(mode) else { throw .invalid("invalid mode 0\(String(mode, radix: 8))") }
        let inode = Inode(mode: mode)
        let (parent, name) = try addToTree(path, inode)

        if isHardlink {
            guard !inode.isDirectory else { throw .invalid("directories can't be hardlinked") }
            guard let target = try unescapeOptional(payloadField) else {
                throw .invalid("no target path for the hardlink")
            }
            if let parent, let name {
                pendingLinks.append(
                    PendingLink(line: lineNumber, path: path, parent: parent, name: name, placeholder: inode, target: target))
            }
            return
        }

        let size = try parseInteger(sizeField, base: 10, name: "size")
        let nlink = try parseInteger(nlinkField, base: 10, name: "nlink")
        let uid = try parseInteger(uidField, base: 10, name: "uid")
        let gid = try parseInteger(gidField, base: 10, name: "gid")
        let rdev = try parseInteger(rdevField, base: 10, name: "rdev")
        let mtime = try parseMtime(mtimeField)
        let payload = try unescapeOptional(payloadField)
        let content = try unescapeOptional(contentField)
        if let content, UInt64(content.count) != size {
            throw .invalid("invalid content size \(content.count), must match size \(size)")
        }
        let digestText = try unescapeOptional(digestField)

        inode.nlink = UInt32(truncatingIfNeeded: nlink)
        inode.uid = UInt32(truncatingIfNeeded: uid)
        inode.gid = UInt32(truncatingIfNeeded: gid)
        inode.mtime = mtime
        if inode.isDevice {
            inode.rdev = UInt32(truncatingIfNeeded: rdev)
        } else if strict && rdev != 0 {
            throw .invalid("non-zero devnum on non-device")
        }
        if inode.isSymlink {
            guard let payload, !payload.isEmpty else { throw .invalid("invalid symlink: empty target") }
            guard payload.count < Limits.pathMax else {
                throw .invalid("invalid symlink: target longer than \(Limits.pathMax - 1) bytes")
            }
            if strict {
                guard size == UInt64(payload.count) else {
                    throw .invalid("invalid symlink size \(size), must match target length \(payload.count)")
                }
                if let content, !content.isEmpty { throw .invalid("symlink cannot have content") }
            }
            inode.payload = payload
            inode.size = UInt64(payload.count)
        } else {
            inode.size = size
            if let payload {
                guard payload.count < Limits.pathMax else {
                    throw .invalid("invalid payload: longer than \(Limits.pathMax - 1) bytes")
                }
                inode.payload = payload
            }
            if let content {
                guard content.count <= Limits.inlineContentMax else {
                    throw .invalid("inline content size \(content.count) exceeds maximum \(Limits.inlineContentMax)")
                }
                // Empty content is the same as none.
                inode.content = content.isEmpty ? nil : content
            }
        }
        // Only regular files have backing objects; the reference ignores the field elsewhere.
        if let digestText, inode.isRegular {
            guard let digest = ObjectID(hex: String(decoding: digestText, as: UTF8.self), algorithm: .sha256) else {
                throw .invalid("invalid digest '\(displayBytes(digestText))': expected \(FsVerityAlgorithm.sha256.digestSize * 2) hex characters")
            }
            inode.digest = digest
        }

        // Setting each xattr scans the previous ones; bound the line to keep that cheap.
        let rest = fields.remainder
        guard rest.count <= Int(UInt16.max) else { throw .invalid("too many xattrs") }
        var xattrFields = FieldSplitter(rest)
        while !xattrFields.isAtEnd {
            let field = xattrFields.next()
            guard let eq = field.firstIndex(of: UInt8(ascii: "=")) else { throw .invalid("missing = in xattr") }
            let key = try Escaping.unescape(UnsafeRawBufferPointer(rebasing: field[..<eq]))
            let value = try Escaping.unescape(UnsafeRawBufferPointer(rebasing: field[(eq + 1)...]))
            do throws(TreeError) {
                try inode.setXattr(key, value, external: true)
            } catch {
                throw .tree(error)
            }
        }
    }

    /// Adds the inode at `path`; returns its parent and name (nil for the root).
    private mutating func addToTree(_ path: [UInt8], _ inode: Inode) throws(DumpfileError.Reason) -> (Inode?, [UInt8]?) {
        if path == [UInt8(ascii: "/")] {
            guard inode.isDirectory else { throw .invalid("root must be a directory") }
            guard root == nil else { throw .invalid("can't have multiple roots") }
            root = inode
            return (nil, nil)
        }
        guard let root else { throw .invalid("root node not present") }
        // Split off the last component (the reference skips repeated slashes).
        var end = path.count
        var start = end
        while start > 0 && path[start - 1] != UInt8(ascii: "/") { start -= 1 }
        let name = Array(path[start..<end])
        end = start
        let parentPath = Array(path[0..<end])
        let parent: Inode
        if let cachedParent, parentPath == cachedParentPath {
            parent = cachedParent
        } else {
            guard let found = lookup(root, parentPath) else {
                throw .invalid("parent directory missing")
            }
            parent = found
            cachedParent = found
            cachedParentPath = parentPath
        }
        guard parent.isDirectory else { throw .invalid("parent must be a directory") }
        guard !name.isEmpty else { throw .invalid("invalid empty file name") }
        guard name != [0x2E] && name != [0x2E, 0x2E] else { throw .invalid("invalid . or .. in path") }
        do throws(TreeError) {
            try parent.addEntry(name, inode)
        } catch {
            if case .duplicateName = error { throw .invalid("path already exists") }
            throw .tree(error)
        }
        return (parent, name)
    }

    /// Resolves a path (components separated by one or more slashes) from the root.
    private func lookup(_ root: Inode, _ path: [UInt8]) -> Inode? {
        var node = root
        var i = 0
        while i < path.count {
            while i < path.count && path[i] == UInt8(ascii: "/") { i += 1 }
            if i == path.count { break }
            var j = i
            while j < path.count && path[j] != UInt8(ascii: "/") { j += 1 }
            guard node.isDirectory, let entry = node.entry(named: Array(path[i..<j])) else { return nil }
            node = entry.inode
            i = j
        }
        return node
    }

    // MARK: End of input

    /// Resolves hard links and returns the root.
    public mutating func finish() throws(DumpfileError) -> Inode {
        guard let root else { throw DumpfileError(line: 0, reason: .invalid("no files in dump file")) }
        // Placeholder inode of each unresolved link → its pending entry.
        var pendingByPlaceholder: [ObjectIdentifier: Int] = [:]
        for (i, link) in pendingLinks.enumerated() { pendingByPlaceholder[ObjectIdentifier(link.placeholder)] = i }

        var resolved: [Int: Inode] = [:]
        func resolve(_ i: Int, visiting: inout Set<Int>) throws(DumpfileError) -> Inode {
            if let done = resolved[i] { return done }
            let link = pendingLinks[i]
            func fail(_ message: String) -> DumpfileError {
                DumpfileError(line: link.line, path: link.path, reason: .invalid(message))
            }
            guard visiting.insert(i).inserted else { throw fail("hardlink cycle through \(displayBytes(link.target))") }
            guard let found = lookup(root, link.target) else {
                throw fail("no target at \(displayBytes(link.target)) for hardlink")
            }
            if found === link.placeholder { throw fail("self-referential hardlink \(displayBytes(link.target))") }
            var target = found
            if let next = pendingByPlaceholder[ObjectIdentifier(found)] {
                target = try resolve(next, visiting: &visiting)
            }
            guard !target.isDirectory else { throw fail("hardlink target \(displayBytes(link.target)) is a directory") }
            resolved[i] = target
            return target
        }
        for i in pendingLinks.indices {
            var visiting = Set<Int>()
            let target = try resolve(i, visiting: &visiting)
            let link = pendingLinks[i]
            let (index, found) = link.parent.entryIndex(link.name)
            if found { link.parent.replaceEntryInode(at: index, with: target, isHardlink: true) }
        }
        pendingLinks.removeAll()
        return root
    }

    // MARK: Field parsing

    private func unescapeOptional(_ field: UnsafeRawBufferPointer) throws(DumpfileError.Reason) -> [UInt8]? {
        if field.count == 1 && field[0] == UInt8(ascii: "-") { return nil }
        return try Escaping.unescape(field)
    }

    /// An unsigned integer as strtoull reads it (leading blanks, optional sign, wrapping
    /// negation, saturation on overflow), but the whole field must be consumed.
    func parseInteger(_ field: UnsafeRawBufferPointer, base: UInt64, name: String) throws(DumpfileError.Reason) -> UInt64 {
        var i = 0
        let n = field.count
        while i < n, field[i] == 0x20 || (field[i] >= 0x09 && field[i] <= 0x0D) { i += 1 }
        var negative = false
        if i < n, field[i] == UInt8(ascii: "+") || field[i] == UInt8(ascii: "-") {
            negative = field[i] == UInt8(ascii: "-")
            i += 1
        }
        let digitsStart = i
        var value: UInt64 = 0
        var overflow = false
        while i < n {
            let d = UInt64(field[i]) &- UInt64(UInt8(ascii: "0"))
            guard d < base else { break }
            let (m, o1) = value.multipliedReportingOverflow(by: base)
            let (a, o2) = m.addingReportingOverflow(d)
            overflow = overflow || o1 || o2
            value = a
            i += 1
        }
        guard i > digitsStart, i == n else {
            throw .invalid("invalid integer '\(displayBytes(field))' for \(name)")
        }
        if overflow { return UInt64.max }
        return negative ? 0 &- value : value
    }

    private func parseMtime(_ field: UnsafeRawBufferPointer) throws(DumpfileError.Reason) -> Timestamp {
        let dot = field.firstIndex(of: UInt8(ascii: ".")) ?? field.count
        let seconds = try parseInteger(UnsafeRawBufferPointer(rebasing: field[..<dot]), base: 10, name: "mtime")
        let rest = dot < field.count ? UnsafeRawBufferPointer(rebasing: field[(dot + 1)...]) : UnsafeRawBufferPointer(start: nil, count: 0)
        let nanoseconds = try parseInteger(rest, base: 10, name: "mtime nanoseconds")
        return Timestamp(seconds: Int64(bitPattern: seconds), nanoseconds: UInt32(truncatingIfNeeded: nanoseconds))
    }
}

/// Splits a line at single spaces; fields past the end are empty.
struct FieldSplitter {
    let line: UnsafeRawBufferPointer
    var position = 0

    init(_ line: UnsafeRawBufferPointer) { self.line = line }

    var isAtEnd: Bool { position >= line.count }

    mutating func next() -> UnsafeRawBufferPointer {
        guard position < line.count else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        let start = position
        var end = start
        while end < line.count && line[end] != UInt8(ascii: " ") { end += 1 }
        position = end + 1
        return UnsafeRawBufferPointer(rebasing: line[start..<end])
    }

    /// Everything after the fields read so far.
    var remainder: UnsafeRawBufferPointer {
        position >= line.count ? UnsafeRawBufferPointer(start: nil, count: 0) : UnsafeRawBufferPointer(rebasing: line[position...])
    }
}

/// Cuts a byte stream into newline-terminated lines across chunk boundaries.
struct LineSplitter {
    private var partial: [UInt8] = []

    mutating func feed(
        _ chunk: UnsafeRawBufferPointer, final: Bool,
        _ body: (UnsafeRawBufferPointer, Bool) throws(DumpfileError) -> Void
    ) throws(DumpfileError) {
        var start = 0
        while let nl = chunk[start...].firstIndex(of: UInt8(ascii: "\n")) {
            if partial.isEmpty {
                try body(UnsafeRawBufferPointer(rebasing: chunk[start..<nl]), true)
            } else {
                partial.append(contentsOf: chunk[start..<nl])
                try withBytes(partial) { (line) throws(DumpfileError) in try body(line, true) }
                partial.removeAll(keepingCapacity: true)
            }
            start = nl + 1
        }
        partial.append(contentsOf: chunk[start...])
        if final && !partial.isEmpty {
            try withBytes(partial) { (line) throws(DumpfileError) in try body(line, false) }
            partial.removeAll()
        }
    }
}
