// Where a tree's policy is read from, with composefs-rs 0.9's two ways of finding its files:
// - `cfsctl compute-id` (and compute-karg, create-dumpfile) reads them on disk under the
//   directory the tree came from (`selabel_from_dir`): openat(2) from etc/selinux, symlinks
//   followed by the kernel, a missing file being absent and any other failure an error;
// - `cfsctl create-image` and OCI images look them up in the tree (`selabel`): no symlink is
//   followed, a directory or non-regular file where a file should be is an error, and the
//   caller reads a regular file's content.
// Either way: no etc/selinux, no etc/selinux/config, or no SELINUXTYPE in it means no policy;
// the policy's files are TYPE/contexts/files/file_contexts (required), .local, .homedirs,
// .subs and .subs_dist.

import ComposeFS
import ComposeFSBase

#if canImport(Glibc)
import Glibc
#endif

/// A policy file the caller could not read, in its own words.
public struct PolicyReadError: Error {
    public var message: String

    public init(_ message: String) { self.message = message }
}

public enum PolicySource {
    /// On disk, under this directory (the one the tree was read from).
    case directory(String)
    /// In the tree; `read` gives a regular file's content (inline, or its object).
    case tree(read: (Inode) throws(PolicyReadError) -> [UInt8])

    var isDirectory: Bool {
        if case .directory = self { return true }
        return false
    }
}

/// The text of a policy's files, as far as they exist.
struct PolicyFiles {
    static let specNames = ["file_contexts", "file_contexts.local", "file_contexts.homedirs"]
    static let substitutionNames = ["file_contexts.subs", "file_contexts.subs_dist"]

    var specifications: [(pattern: String, context: String)] = []
    var aliases: [[UInt8]: [UInt8]] = [:]
}

/// Reads the files of the policy a tree names; nil when it names none.
struct PolicyReader {
    let source: PolicySource
    let root: Inode

    private func fail(_ stage: SELinuxStage, _ problem: SELinuxProblem) -> SELinuxError {
        SELinuxError(fromDirectory: source.isDirectory, stage: stage, problem: problem)
    }

    func read() throws(SELinuxError) -> PolicyFiles? {
        switch source {
        case let .directory(path): return try readFromDirectory(path)
        case let .tree(read): return try readFromTree(read)
        }
    }

    /// Parses the spec and substitution files in composefs-rs's order, each as it is opened.
    private func parse(
        policyType: String, open: (String, SELinuxStage) throws(SELinuxError) -> [UInt8]?
    ) throws(SELinuxError) -> PolicyFiles {
        var files = PolicyFiles()
        for name in PolicyFiles.specNames {
            let stage = SELinuxStage.specFile(name)
            guard let bytes = try open(name, stage) else {
                if name == PolicyFiles.specNames[0] { throw fail(.policy, .missingFileContexts) }
                continue
            }
            do { try PolicyText.specifications(bytes, into: &files.specifications) } catch { throw fail(stage, error.problem) }
        }
        for name in PolicyFiles.substitutionNames {
            let stage = SELinuxStage.substitutionsFile(name)
            guard let bytes = try open(name, stage) else { continue }
            do { try PolicyText.substitutions(bytes, into: &files.aliases) } catch { throw fail(stage, error.problem) }
        }
        return files
    }

    private func policyType(_ config: [UInt8]) throws(SELinuxError) -> String? {
        do { return try PolicyText.policyType(config: config) } catch { throw fail(.configuration, error.problem) }
    }

    // MARK: On disk

    private func readFromDirectory(_ path: String) throws(SELinuxError) -> PolicyFiles? {
        let root = openat(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw fail(.configuration, .system(errno)) }
        defer { close(root) }
        let etcSELinux = openat(root, "etc/selinux", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard etcSELinux >= 0 else {
            if errno == ENOENT { return nil }
            throw fail(.configuration, .system(errno))
        }
        defer { close(etcSELinux) }
        guard let config = try readFile("config", in: etcSELinux, openStage: .configuration, readStage: .configuration),
            let type = try policyType(config)
        else { return nil }
        return try parse(policyType: type) { (name, stage) throws(SELinuxError) in
            // Rust cannot pass a path with a NUL to the kernel.
            if type.utf8.contains(0) { throw fail(.policy, .system(EINVAL)) }
            return try readFile("\(type)/contexts/files/\(name)", in: etcSELinux, openStage: .policy, readStage: stage)
        }
    }

    /// The content of `path`, nil when it does not exist. A FIFO or device is refused rather
    /// than read (composefs-rs would block on it or read it forever).
    private func readFile(
        _ path: String, in directory: Int32, openStage: SELinuxStage, readStage: SELinuxStage
    ) throws(SELinuxError) -> [UInt8]? {
        let fd = openat(directory, path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw fail(openStage, .system(errno))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw fail(readStage, .system(errno)) }
        switch info.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFDIR: throw fail(readStage, .system(EISDIR))
        default: throw fail(readStage, .refused("\(path): not a regular file"))
        }
        do { return try readAll(fd, path: path) } catch { throw fail(readStage, .system(error.code)) }
    }

    // MARK: In the tree

    private func readFromTree(_ read: (Inode) throws(PolicyReadError) -> [UInt8]) throws(SELinuxError) -> PolicyFiles? {
        func content(_ file: Inode, stage: SELinuxStage) throws(SELinuxError) -> [UInt8] {
            do { return try read(file) } catch { throw fail(stage, .unreadable(error.message)) }
        }
        let etcSELinux: Inode?
        do { etcSELinux = try TreePath.optionalDirectory(root, "etc/selinux") } catch {
            throw fail(.configuration, .treeEntry(error.message))
        }
        guard let etcSELinux else { return nil }
        let configFile: Inode?
        do { configFile = try TreePath.regularFile(etcSELinux, "config") } catch { throw fail(.configuration, .treeEntry(error.message)) }
        guard let configFile, let type = try policyType(try content(configFile, stage: .configuration)) else { return nil }
        return try parse(policyType: type) { (name, stage) throws(SELinuxError) in
            let file: Inode?
            do throws(TreePath.Failure) {
                file = try TreePath.regularFile(try TreePath.directory(try TreePath.directory(etcSELinux, type), "contexts/files"), name)
            } catch {
                throw fail(.policy, .treeEntry(error.message))
            }
            guard let file else { return nil }
            return try content(file, stage: stage)
        }
    }
}

/// composefs-rs's lookups in a tree (`get_directory`, `get_file_opt`), with its messages.
enum TreePath {
    struct Failure: Error {
        var message: String
    }

    /// The directory at `path` below `start`.
    static func directory(_ start: Inode, _ path: String) throws(Failure) -> Inode {
        guard let found = try optionalDirectory(start, path) else {
            throw Failure(message: "Directory entry \(debugQuoted(path)) does not exist")
        }
        return found
    }

    /// The directory at `path` below `start`, nil when something on the way is missing. Its
    /// components are those Rust's `Path::components` gives (a "." first or any ".." refused,
    /// a leading "/" meaning `start` itself).
    static func optionalDirectory(_ start: Inode, _ path: String) throws(Failure) -> Inode? {
        var current = start
        for component in try components(path) {
            guard let entry = current.entry(named: Array(component.utf8)) else { return nil }
            guard entry.inode.isDirectory else {
                throw Failure(message: "Directory entry \(debugQuoted(component)) is not a subdirectory")
            }
            current = entry.inode
        }
        return current
    }

    /// The regular file `name` in `directory`, nil when there is none.
    static func regularFile(_ directory: Inode, _ name: String) throws(Failure) -> Inode? {
        guard let entry = directory.entry(named: Array(name.utf8)) else { return nil }
        if entry.inode.isDirectory { throw Failure(message: "Directory entry \(debugQuoted(name)) is a directory") }
        guard entry.inode.isRegular else { throw Failure(message: "Directory entry \(debugQuoted(name)) is not a regular file") }
        return entry.inode
    }

    private static func components(_ path: String) throws(Failure) -> [String] {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        var result: [String] = []
        for (index, part) in parts.enumerated() {
            switch part {
            case "": continue
            case ".":
                // Only a relative path's first component survives as ".".
                if index == 0 { throw Failure(message: "Invalid filename \(debugQuoted(path))") }
            case "..": throw Failure(message: "Invalid filename \(debugQuoted(path))")
            default: result.append(part)
            }
        }
        return result
    }

    /// A name as Rust's `{:?}` shows it (for printable names).
    static func debugQuoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\0": result += "\\0"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                result += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}
