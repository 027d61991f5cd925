// What finding and writing boot entries can fail on; each names the file or entry and why.

import ComposeFSBase

public enum BootError: Error, Equatable, CustomStringConvertible {
    /// A directory whose tree cannot be read or made a container root.
    case source(path: String, reason: String)
    /// A path of the image's tree that does not lead where it must (composefs-rs's messages).
    case tree(path: String, TreeLookupError)
    /// A boot entry file (loader/entries/*.conf) that cannot be used.
    case entry(path: String, reason: String)
    /// A UKI that cannot be read or does not boot this image.
    case uki(path: String, reason: String)
    /// A kernel of /usr/lib/modules that cannot be made an entry.
    case kernel(version: String, reason: String)
    case invalidEntryID(String, reason: String)
    /// A `--cmdline` argument that cannot be added.
    case invalidArgument(String, reason: String)
    /// Where a file would go in the boot directory is not usable.
    case destination(path: String, reason: String)
    case noBootEntries
    /// A file of the image whose content cannot be read.
    case unreadable(path: String, reason: String)
    case system(SystemError)

    public var description: String {
        switch self {
        case let .source(path, reason): "\(path): \(reason)"
        case let .tree(path, error): "\(path): \(error)"
        case let .entry(path, reason): "boot entry \(path): \(reason)"
        case let .uki(path, reason): "UKI \(path): \(reason)"
        case let .kernel(version, reason): "kernel \(version): \(reason)"
        case let .invalidEntryID(id, reason): "invalid boot entry id '\(id)': \(reason)"
        case let .invalidArgument(argument, reason): "invalid kernel argument '\(argument)': \(reason)"
        case let .destination(path, reason): "\(path): \(reason)"
        case .noBootEntries: "No boot entries!"
        case let .unreadable(path, reason): "reading \(path): \(reason)"
        case let .system(error): error.description
        }
    }
}

/// A path lookup in a tree that failed, as composefs-rs words it.
public enum TreeLookupError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A `.` or `..` component, or no file name.
    case invalidFilename(String)
    case notFound(String)
    case notADirectory(String)
    case isADirectory(String)
    case notRegularFile(String)

    public var description: String {
        switch self {
        case let .invalidFilename(name): "Invalid filename \"\(name)\""
        case let .notFound(name): "Directory entry \"\(name)\" does not exist"
        case let .notADirectory(name): "Directory entry \"\(name)\" is not a subdirectory"
        case let .isADirectory(name): "Directory entry \"\(name)\" is a directory"
        case let .notRegularFile(name): "Directory entry \"\(name)\" is not a regular file"
        }
    }
}
