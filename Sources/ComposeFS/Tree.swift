// The in-memory filesystem tree that dumpfiles, directories and images are
// turned into, and that the image writer serializes.

import ComposeFSBase
import EROFS
import FsVerity

/// Limits composefs places on trees (the reference's, so the same inputs are accepted).
public enum Limits {
    /// Longest inline file content.
    public static let inlineContentMax = 5000
    /// Files up to this size are inlined by mkcomposefs rather than stored as objects
    /// (64 bytes is the length of the redirect that would otherwise be stored).
    public static let recommendedInlineContentMax = 64
    /// Symlink targets and backing-file paths must be shorter than PATH_MAX.
    public static let pathMax = 4096
    public static let nameMax = EROFSConstants.maxNameLength
    public static let xattrNameMax = 255
    public static let xattrValueMax = Int(UInt16.max)
    /// Accounted xattr space per inode from external input (half of what EROFS allows,
    /// leaving room for the overlay xattrs composefs adds).
    public static let externalXattrSpaceMax = Int(UInt16.max) / 2
    public static let xattrSpaceMax = Int(UInt16.max)
}

/// One extended attribute; names and values are arbitrary bytes.
public struct Xattr: Hashable, Sendable {
    public var key: [UInt8]
    public var value: [UInt8]

    public init(key: [UInt8], value: [UInt8]) {
        self.key = key
        self.value = value
    }

    // Hash whole buffers at once; the synthesized conformance feeds bytes one by one.
    public func hash(into hasher: inout Hasher) {
        key.withUnsafeBytes { hasher.combine(bytes: $0) }
        hasher.combine(key.count)
        value.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// Seconds and nanoseconds since the epoch.
public struct Timestamp: Hashable, Comparable, Sendable {
    public var seconds: Int64
    public var nanoseconds: UInt32

    public init(seconds: Int64, nanoseconds: UInt32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static let zero = Timestamp(seconds: 0, nanoseconds: 0)

    public static func < (a: Timestamp, b: Timestamp) -> Bool {
        a.seconds < b.seconds || (a.seconds == b.seconds && a.nanoseconds < b.nanoseconds)
    }
}

/// A file of any type. Hard links are several directory entries sharing one Inode.
public final class Inode {
    public var mode: UInt32
    public var nlink: UInt32 = 1
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    /// Device number in the Linux "new" encoding, truncated to 32 bits as composefs stores it.
    public var rdev: UInt32 = 0
    public var size: UInt64 = 0
    public var mtime: Timestamp = .zero
    /// Symlink target, or for regular files the backing object path relative to the basedir.
    public var payload: [UInt8]?
    /// Inline file content (at most `Limits.inlineContentMax` bytes).
    public var content: [UInt8]?
    /// The fs-verity digest of the backing file (what the metacopy xattr records).
    public var digest: ObjectID?
    /// Extended attributes, in insertion order until the writer sorts a copy.
    public internal(set) var xattrList = XattrList()
    /// Directory entries sorted by name bytes (directories only).
    public private(set) var entries: [DirectoryEntry] = []

    public init(mode: UInt32) {
        self.mode = mode
    }

    public var fileType: UInt32 { mode & FileMode.typeMask }
    public var isDirectory: Bool { fileType == FileMode.directory }
    public var isRegular: Bool { fileType == FileMode.regular }
    public var isSymlink: Bool { fileType == FileMode.symlink }
    public var isDevice: Bool { fileType == FileMode.characterDevice || fileType == FileMode.blockDevice }
    /// An overlayfs whiteout: a character device with device number 0/0.
    public var isWhiteout: Bool { fileType == FileMode.characterDevice && rdev == 0 }

    // MARK: Xattrs

    public var xattrs: [Xattr] { xattrList.items }

    public func xattr(_ key: [UInt8]) -> [UInt8]? { xattrList.value(key) }

    public func removeAllXattrs() { xattrList = XattrList() }

    /// Keeps only the xattrs whose key `keep` accepts.
    public func filterXattrs(_ keep: ([UInt8]) -> Bool) { xattrList.filter(keep) }

    /// Replaces all xattrs with `list`.
    public func replaceXattrs(with list: XattrList) { xattrList = list }

    /// Sets (or replaces) an xattr; `external` selects the stricter space limit for untrusted input.
    public func setXattr(_ key: [UInt8], _ value: [UInt8], external: Bool = true) throws(TreeError) {
        try xattrList.set(key, value, external: external)
    }

    // MARK: Directory entries

    /// Index of `name`, or where it would be inserted.
    public func entryIndex(_ name: [UInt8]) -> (index: Int, found: Bool) {
        // Entries usually arrive in sorted order: check the end first.
        if let last = entries.last {
            let c = compareBytes(name, last.name)
            if c == 0 { return (entries.count - 1, true) }
            if c > 0 { return (entries.count, false) }
        }
        var low = 0
        var high = entries.count
        while low < high {
            let mid = (low + high) / 2
            let c = compareBytes(name, entries[mid].name)
            if c == 0 { return (mid, true) }
            if c < 0 { high = mid } else { low = mid + 1 }
        }
        return (low, false)
    }

    public func entry(named name: [UInt8]) -> DirectoryEntry? {
        let (index, found) = entryIndex(name)
        return found ? entries[index] : nil
    }

    /// Adds a child entry, keeping entries sorted. Names must be valid file names.
    public func addEntry(_ name: [UInt8], _ inode: Inode, isHardlink: Bool = false) throws(TreeError) {
        guard isDirectory else { throw .notADirectory }
        guard !name.isEmpty else { throw .invalidName(name) }
        guard name.count <= Limits.nameMax else { throw .nameTooLong(name) }
        guard !name.contains(UInt8(ascii: "/")), name != [0x2E], name != [0x2E, 0x2E] else {
            throw .invalidName(name)
        }
        let (index, found) = entryIndex(name)
        if found { throw .duplicateName(name) }
        entries.insert(DirectoryEntry(name: name, inode: inode, isHardlink: isHardlink), at: index)
    }

    /// Removes the entry `name` if there is one (and with a directory, everything below it).
    public func removeEntry(_ name: [UInt8]) {
        let (index, found) = entryIndex(name)
        if found { entries.remove(at: index) }
    }

    /// Removes every entry.
    public func removeAllEntries() { entries.removeAll() }

    /// Marks the entry at `index` as a hard link to its inode's primary entry, or as the primary.
    public func setHardlink(at index: Int, _ isHardlink: Bool) { entries[index].isHardlink = isHardlink }

    /// Points an existing entry at another inode (used to resolve hard links).
    public func replaceEntryInode(at index: Int, with inode: Inode, isHardlink: Bool) {
        entries[index].inode = inode
        entries[index].isHardlink = isHardlink
    }
}

/// An inode's xattrs with the reference's space accounting, which bounds what one
/// inode may carry so the EROFS xattr area (at most 64 KiB) always fits.
public struct XattrList: Sendable {
    public private(set) var items: [Xattr] = []
    /// Worst-case encoded size: per entry the header doubled minus one (alignment),
    /// plus the body header once.
    public private(set) var accountedSize = 0

    public init() {}

    public func value(_ key: [UInt8]) -> [UInt8]? {
        items.first(where: { $0.key == key })?.value
    }

    public mutating func set(_ key: [UInt8], _ value: [UInt8], external: Bool) throws(TreeError) {
        guard !key.isEmpty, key.count <= Limits.xattrNameMax else { throw .invalidXattrName(key) }
        guard value.count <= Limits.xattrValueMax else { throw .xattrTooLarge(key) }
        remove(key)
        var entrySize = 7 + key.count + value.count
        if items.isEmpty { entrySize += XattrBodyHeader.size }
        let limit = external ? Limits.externalXattrSpaceMax : Limits.xattrSpaceMax
        guard accountedSize + entrySize <= limit else { throw .xattrSpaceExceeded(key) }
        items.append(Xattr(key: key, value: value))
        accountedSize += entrySize
    }

    public mutating func remove(_ key: [UInt8]) {
        guard let index = items.firstIndex(where: { $0.key == key }) else { return }
        let old = items.remove(at: index)
        accountedSize = items.isEmpty ? 0 : accountedSize - (7 + old.key.count + old.value.count)
    }

    /// Keeps only the xattrs whose key `keep` accepts.
    public mutating func filter(_ keep: ([UInt8]) -> Bool) {
        let kept = items.filter { keep($0.key) }
        guard kept.count != items.count else { return }
        self = XattrList()
        for xattr in kept { try? set(xattr.key, xattr.value, external: false) }
    }

    /// Renames in place without re-accounting (as the reference does when escaping).
    mutating func rename(at index: Int, to key: [UInt8]) { items[index].key = key }

    mutating func sortByKey() { items.sort { compareBytes($0.key, $1.key) < 0 } }
}

/// A name in a directory. The first entry of an inode (in dumpfile order) is its
/// primary one; the others are hard links to it.
public struct DirectoryEntry {
    public var name: [UInt8]
    public var inode: Inode
    public var isHardlink: Bool
}

/// Errors building or validating a tree.
public enum TreeError: Error, Equatable, CustomStringConvertible {
    case notADirectory
    case invalidName([UInt8])
    case nameTooLong([UInt8])
    case duplicateName([UInt8])
    case invalidXattrName([UInt8])
    case xattrTooLarge([UInt8])
    case xattrSpaceExceeded([UInt8])

    public var description: String {
        switch self {
        case .notADirectory: return "parent is not a directory"
        case let .invalidName(n): return "invalid file name '\(displayBytes(n))'"
        case let .nameTooLong(n): return "file name longer than \(Limits.nameMax) bytes: '\(displayBytes(n.prefix(40)))…'"
        case let .duplicateName(n): return "duplicate entry '\(displayBytes(n))'"
        case let .invalidXattrName(k):
            return k.isEmpty ? "empty xattr name" : "xattr name longer than \(Limits.xattrNameMax) bytes: '\(displayBytes(k.prefix(40)))…'"
        case let .xattrTooLarge(k): return "xattr '\(displayBytes(k))' value larger than \(Limits.xattrValueMax) bytes"
        case let .xattrSpaceExceeded(k): return "too much xattr data (adding '\(displayBytes(k.prefix(60)))')"
        }
    }
}
