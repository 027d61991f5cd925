// Paths looked up in an image's tree as composefs-rs looks them up (Rust's `Path` components):
// repeated and trailing slashes and inner `.` components are ignored, a leading `.` or any `..`
// is an invalid file name, symlinks are never followed, and every step must be a directory.

import ComposeFS
import ComposeFSBase

enum TreeLookup {
    enum Component: Equatable {
        case root
        case current
        case parent
        case normal([UInt8])
    }

    static func components(_ path: [UInt8]) -> [Component] {
        var components: [Component] = []
        let absolute = path.first == UInt8(ascii: "/")
        if absolute { components.append(.root) }
        for (index, part) in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).enumerated() {
            switch Array(part) {
            case []: continue
            case [0x2E]: if index == 0 && !absolute { components.append(.current) }
            case [0x2E, 0x2E]: components.append(.parent)
            default: components.append(.normal(Array(part)))
            }
        }
        return components
    }

    /// The directory at `path`; nil when a component does not exist.
    static func directory(_ root: Inode, _ path: [UInt8]) throws(TreeLookupError) -> Inode? {
        var directory = root
        for component in components(path) {
            switch component {
            case .root: continue
            case .current, .parent: throw .invalidFilename(displayBytes(path))
            case let .normal(name):
                guard let entry = directory.entry(named: name) else { return nil }
                guard entry.inode.isDirectory else { throw .notADirectory(displayBytes(name)) }
                directory = entry.inode
            }
        }
        return directory
    }

    /// The regular file at `path`.
    static func regularFile(_ root: Inode, _ path: [UInt8]) throws(TreeLookupError) -> Inode {
        let parts = components(path)
        guard case let .normal(name)? = parts.last else { throw .invalidFilename(displayBytes(path)) }
        // The parent as written: everything before the file name, its trailing slashes removed.
        var parentPath = Array(path.reversed().drop { $0 == UInt8(ascii: "/") }.drop { $0 != UInt8(ascii: "/") }.reversed())
        while parentPath.count > 1 && parentPath.last == UInt8(ascii: "/") { parentPath.removeLast() }
        var directory = root
        for component in parts.dropLast() {
            switch component {
            case .root: continue
            case .current, .parent: throw .invalidFilename(displayBytes(parentPath))
            case let .normal(component):
                guard let entry = directory.entry(named: component) else { throw .notFound(displayBytes(parentPath)) }
                guard entry.inode.isDirectory else { throw .notADirectory(displayBytes(component)) }
                directory = entry.inode
            }
        }
        guard let entry = directory.entry(named: name) else { throw .notFound(displayBytes(name)) }
        guard !entry.inode.isDirectory else { throw .isADirectory(displayBytes(name)) }
        guard entry.inode.isRegular else { throw .notRegularFile(displayBytes(name)) }
        return entry.inode
    }
}
