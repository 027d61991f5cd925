// A composefs repository (composefs-rs doc/repository.md): objects named by fs-verity digest,
// images/ and streams/ entries naming objects, refs/ naming entries.
//
// Crash safety: objects are written as unnamed files (O_TMPFILE) that get their name only
// once complete, so a killed writer leaves nothing behind; symlinks are replaced by rename.
// Concurrency: every user holds a shared flock on the repository directory; gc takes it
// exclusively, so it never runs while an import is between writing objects and naming them.

import CComposeFSSys
import ComposeFS
import ComposeFSBuild
import ComposeFSBase
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

public final class Repository: @unchecked Sendable {
    public let path: String
    /// The repository directory, also the lock.
    let directory: FileDescriptor
    public let metadata: RepositoryMetadata
    /// Whether meta.json has fs-verity: then every object must have it too.
    public private(set) var isSecure: Bool

    public var algorithm: FsVerityAlgorithm { metadata.algorithm.hash }

    // MARK: Opening and creating

    /// Image formats for this use only, instead of meta.json's (`cfsctl --erofs-version`).
    public var formatOverride: FormatVersion?

    /// The formats images are written in, the default first.
    public var imageFormats: [FormatVersion] { formatOverride.map { [$0] } ?? metadata.formats }

    /// Opens an initialized repository and takes the shared lock. A repository from before
    /// meta.json (objects/ but no meta.json) is given one first, as composefs-rs does, unless
    /// `upgrade` is false.
    public init(path: String, upgrade: Bool = true) throws(RepositoryError) {
        self.path = path
        let directory = try systemCall { () throws(SystemError) in try FileDescriptor.open(path, O_RDONLY | O_DIRECTORY) }
        self.directory = directory
        try Self.lock(directory, LOCK_SH)
        var bytes = try systemCall { () throws(SystemError) in try ComposeFSBase.readFile("meta.json", relativeTo: directory.raw) }
        if bytes == nil && upgrade, try Self.upgradeLegacy(directory, path: path) {
            bytes = try systemCall { () throws(SystemError) in try ComposeFSBase.readFile("meta.json", relativeTo: directory.raw) }
        }
        guard let bytes else { throw .notInitialized(path: path) }
        metadata = try RepositoryMetadata(decoding: bytes)
        try metadata.checkSupported()
        isSecure = Self.hasVerity(directory, "meta.json", algorithm: metadata.algorithm.hash)
    }

    /// Stops requiring fs-verity on objects and images for this use (`cfsctl --insecure`).
    public func treatAsInsecure() { isSecure = false }

    /// The algorithm of the repository at `path` without opening it for use: meta.json's, or
    /// for a repository from before meta.json, the one its object names tell. Writes nothing.
    public static func detectAlgorithm(at path: String) throws(RepositoryError) -> RepositoryAlgorithm {
        let directory = try systemCall { () throws(SystemError) in try FileDescriptor.open(path, O_RDONLY | O_DIRECTORY) }
        if let bytes = try systemCall({ () throws(SystemError) in try ComposeFSBase.readFile("meta.json", relativeTo: directory.raw) }) {
            return try RepositoryMetadata(decoding: bytes).algorithm
        }
        guard let (algorithm, _) = try legacyAlgorithm(directory, path: path) else { throw .notInitialized(path: path) }
        return algorithm
    }

    /// Gives a repository from before meta.json (one with objects/) the meta.json `init` writes,
    /// its algorithm told by the length of the first object name and fs-verity on it when that
    /// object has fs-verity. False when there is no objects/ directory.
    static func upgradeLegacy(_ directory: FileDescriptor, path: String) throws(RepositoryError) -> Bool {
        guard let (algorithm, object) = try legacyAlgorithm(directory, path: path) else { return false }
        let verity = Self.hasVerity(directory, "objects/" + object, algorithm: algorithm.hash)
        try writeMetadata(RepositoryMetadata(algorithm: algorithm), in: directory, path: path, insecure: !verity)
        return true
    }

    /// The algorithm of a repository without meta.json, from the first object's name (62 hex
    /// digits: SHA-256, 126: SHA-512), and that object; nil without objects/.
    static func legacyAlgorithm(_ directory: FileDescriptor, path: String) throws(RepositoryError) -> (RepositoryAlgorithm, String)? {
        var info = stat()
        guard fstatat(directory.raw, "objects", &info, 0) == 0 else { return nil }
        for (prefix, _) in try list(directory, "objects", path: path) where prefix.utf8.count == 2 {
            for (name, _) in try list(directory, "objects/" + prefix, path: path) {
                switch name.utf8.count {
                case 62: return (.sha256, prefix + "/" + name)
                case 126: return (.sha512, prefix + "/" + name)
                default: continue
                }
            }
        }
        throw .noObjectsToInferFrom(path: path)
    }

    public enum InitResult: Equatable { case created, alreadyInitialized, upgraded }

    /// Creates the repository directory (mode 0700) and meta.json. meta.json gets fs-verity
    /// unless `insecure`; where the file system cannot do that, initialization fails. A
    /// repository with the same meta.json is left alone; one with another is refused.
    public static func initialize(
        at path: String, algorithm: RepositoryAlgorithm, erofsVersion: FormatVersion = .v1, insecure: Bool
    ) throws(RepositoryError) -> InitResult {
        let directory = try makeRepositoryDirectory(path)
        let wanted = RepositoryMetadata(algorithm: algorithm, erofsVersion: erofsVersion)
        if let existing = try systemCall({ () throws(SystemError) in try ComposeFSBase.readFile("meta.json", relativeTo: directory.raw) }) {
            let current = try RepositoryMetadata(decoding: existing)
            guard current == wanted else {
                throw .alreadyInitialized(path: path, existing: current, requested: wanted)
            }
            return .alreadyInitialized
        }
        do throws(RepositoryError) {
            try writeMetadata(wanted, in: directory, path: path, insecure: insecure)
        } catch .system(let error) where error.code == EEXIST {
            // Initialized concurrently; it must agree with us.
            return try initialize(at: path, algorithm: algorithm, erofsVersion: erofsVersion, insecure: insecure)
        }
        return .created
    }

    /// `cfsctl init --ensure`: an existing repository (of this algorithm) is kept as it is, one
    /// from before meta.json is upgraded, and anything else is initialized.
    public static func ensure(
        at path: String, algorithm: RepositoryAlgorithm, erofsVersion: FormatVersion = .v1, insecure: Bool
    ) throws(RepositoryError) -> InitResult {
        let directory = try makeRepositoryDirectory(path)
        if let existing = try systemCall({ () throws(SystemError) in try ComposeFSBase.readFile("meta.json", relativeTo: directory.raw) }) {
            let current = try RepositoryMetadata(decoding: existing)
            try current.checkSupported()
            guard current.algorithm == algorithm else {
                throw .algorithmMismatch(path: path, found: current.algorithm, expected: algorithm)
            }
            return .alreadyInitialized
        }
        if let (found, _) = try legacyAlgorithm(directory, path: path) {
            guard found == algorithm else { throw .algorithmMismatch(path: path, found: found, expected: algorithm) }
            _ = try upgradeLegacy(directory, path: path)
            return .upgraded
        }
        return try initialize(at: path, algorithm: algorithm, erofsVersion: erofsVersion, insecure: insecure)
    }

    /// `cfsctl init --reset-metadata`: removes streams/, images/ and meta.json, keeping objects/.
    public static func resetMetadata(at path: String) throws(RepositoryError) {
        for name in ["streams", "images"] { try removeTree(path + "/" + name) }
        if unlink(path + "/meta.json") != 0 && errno != ENOENT { throw .system(SystemError("unlink", path: path + "/meta.json")) }
    }

    /// mkdir -p of the parent, then the repository directory itself with mode 0700.
    private static func makeRepositoryDirectory(_ path: String) throws(RepositoryError) -> FileDescriptor {
        try makeParentDirectories(of: path)
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw .system(SystemError("mkdir", path: path)) }
        return try systemCall { () throws(SystemError) in try FileDescriptor.open(path, O_RDONLY | O_DIRECTORY) }
    }

    /// Writes meta.json as an unnamed file linked in when complete, with fs-verity unless `insecure`.
    private static func writeMetadata(
        _ metadata: RepositoryMetadata, in directory: FileDescriptor, path: String, insecure: Bool
    ) throws(RepositoryError) {
        let file = try UnnamedFile(in: directory, mode: 0o644)
        try systemCall { () throws(SystemError) in
            try file.fd.write(metadata.encoded())
            try file.fd.sync()
        }
        if !insecure {
            do throws(FsVerityError) {
                try file.enableVerity(algorithm: metadata.algorithm.hash)
            } catch {
                throw .unsupported(
                    "cannot enable fs-verity on \(path)/meta.json: \(error) (use --insecure on file systems without fs-verity)")
            }
        }
        try systemCall { () throws(SystemError) in try file.fd.linkUnnamed(as: "meta.json", in: directory) }
    }

    /// rm -r, for the metadata `--reset-metadata` removes.
    private static func removeTree(_ path: String) throws(RepositoryError) {
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw .system(SystemError("stat", path: path))
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            let directory = try systemCall { () throws(SystemError) in try FileDescriptor.open(path, O_RDONLY | O_DIRECTORY) }
            for (name, _) in try list(directory, ".", path: path) { try removeTree(path + "/" + name) }
            guard rmdir(path) == 0 else { throw .system(SystemError("rmdir", path: path)) }
        } else if unlink(path) != 0 {
            throw .system(SystemError("unlink", path: path))
        }
    }

    // MARK: Locking

    /// Trades the shared lock for the exclusive one (waiting for every other user to finish).
    public func lockExclusive() throws(RepositoryError) { try Self.lock(directory, LOCK_EX) }
    public func lockShared() throws(RepositoryError) { try Self.lock(directory, LOCK_SH) }

    private static func lock(_ directory: FileDescriptor, _ operation: Int32) throws(RepositoryError) {
        while flock(directory.raw, operation) != 0 {
            guard errno == EINTR else { throw .system(SystemError("flock", path: directory.path)) }
        }
    }

    // MARK: Objects

    /// The open objects/ directory, created on first use.
    func objectsDirectory() throws(RepositoryError) -> FileDescriptor {
        try openDirectory("objects", create: true)
    }

    /// objects/ opened anew, for another process to read objects below it by name (a layer
    /// handed over by varlink's GetLayer).
    public func openObjectsDirectory() throws(RepositoryError) -> FileDescriptor { try objectsDirectory() }

    /// Stores `bytes` unless an object with their digest exists; returns the digest.
    @discardableResult
    public func ensureObject(_ bytes: [UInt8]) throws(RepositoryError) -> ObjectID {
        try storeObject(bytes).id
    }

    /// Stores `bytes` unless an object with their digest exists; says which it was.
    public func storeObject(_ bytes: [UInt8]) throws(RepositoryError) -> (id: ObjectID, existed: Bool) {
        let id = FsVerity.digest(of: bytes, algorithm: algorithm)
        let objects = try objectsDirectory()
        if try existingObjectMatches(objects, id: id, size: bytes.count) { return (id, true) }
        let file = try UnnamedFile(in: objects, mode: 0o644)
        try systemCall { () throws(SystemError) in try file.fd.write(bytes) }
        try finish(file, id: id, objects: objects)
        return (id, false)
    }

    /// Copies an open file (of `size` bytes, fs-verity digest `id`) in as an object.
    func ensureObject(copying source: Int32, id: ObjectID, size: UInt64, objects: FileDescriptor) throws(RepositoryError) {
        if try existingObjectMatches(objects, id: id, size: Int(size)) { return }
        let file = try UnnamedFile(in: objects, mode: 0o644)
        try systemCall { () throws(SystemError) in try copyContents(from: source, to: file.fd.raw, destination: path + "/objects/" + id.objectPath) }
        let info = try systemCall { () throws(SystemError) in try file.fd.status() }
        guard UInt64(info.st_size) == size else {
            throw .corrupt(path: path + "/objects/" + id.objectPath, reason: "source changed size while it was copied")
        }
        try finish(file, id: id, objects: objects)
    }

    /// Enables verity (required in a secure repository), checks the kernel agrees on the
    /// digest, then names the file. Someone else naming it first is fine: same content.
    func finish(_ file: UnnamedFile, id: ObjectID, objects: FileDescriptor) throws(RepositoryError) {
        let name = id.objectPath
        var measured: ObjectID?
        do throws(FsVerityError) {
            try file.enableVerity(algorithm: algorithm)
            measured = try file.measure()
        } catch .notSupported where !isSecure {
            // An insecure repository on a file system without fs-verity.
        } catch {
            throw .verity(path: "objects/" + name, error)
        }
        if let measured, measured != id {
            throw .digestMismatch(path: "objects/" + name, expected: id, actual: measured)
        }
        try makeDirectory(at: objects, String(name.prefix(2)), path: "objects/" + name.prefix(2))
        do throws(SystemError) {
            try file.fd.linkUnnamed(as: name, in: objects)
        } catch where error.code == EEXIST {
        } catch {
            throw .system(error)
        }
    }

    /// Whether the object exists with the right size (and, where the kernel can say, digest).
    func existingObjectMatches(_ objects: FileDescriptor, id: ObjectID, size: Int) throws(RepositoryError) -> Bool {
        let fd = openat(objects.raw, id.objectPath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT { return false }
            throw .system(SystemError("open", path: path + "/objects/" + id.objectPath))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, Int(info.st_size) == size else { return false }
        if let measured = try? FsVerity.measure(fileDescriptor: fd), measured != id {
            throw .digestMismatch(path: "objects/" + id.objectPath, expected: id, actual: measured)
        }
        return true
    }

    /// Opens an object for reading; in a secure repository the kernel must vouch for it.
    public func openObject(_ id: ObjectID) throws(RepositoryError) -> FileDescriptor {
        let name = "objects/" + id.objectPath
        let file = try systemCall { () throws(SystemError) in try FileDescriptor.open(name, O_RDONLY, relativeTo: directory) }
        try checkVerity(file.raw, expected: id, path: name)
        return file
    }

    /// The kernel's digest must equal `expected`; a missing digest is only allowed in an
    /// insecure repository.
    func checkVerity(_ fd: Int32, expected: ObjectID, path name: String) throws(RepositoryError) {
        let measured: ObjectID
        do throws(FsVerityError) {
            measured = try FsVerity.measure(fileDescriptor: fd)
        } catch .notEnabled, .notSupported {
            if isSecure { throw .verityMissing(path: name) }
            return
        } catch {
            throw .verity(path: name, error)
        }
        guard measured == expected else { throw .digestMismatch(path: name, expected: expected, actual: measured) }
    }

    /// Flushes everything written so far, before names that promise it exists appear.
    func sync() throws(RepositoryError) {
        let result = cfs_syncfs(directory.raw)
        guard result == 0 else { throw .system(SystemError("syncfs", path: path, code: -result)) }
    }

    // MARK: Directories and symlinks

    /// Opens a directory below the repository, creating it (and its parents) if asked.
    func openDirectory(_ relative: String, create: Bool) throws(RepositoryError) -> FileDescriptor {
        if create {
            var prefix = ""
            for component in relative.split(separator: "/") {
                prefix += prefix.isEmpty ? String(component) : "/" + component
                try makeDirectory(at: directory, prefix, path: prefix)
            }
        }
        let fd = openat(directory.raw, relative, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(SystemError("open", path: path + "/" + relative)) }
        return FileDescriptor(owning: fd, path: path + "/" + relative)
    }

    func makeDirectory(at parent: FileDescriptor, _ name: String, path display: String) throws(RepositoryError) {
        if mkdirat(parent.raw, name, 0o755) != 0 && errno != EEXIST {
            throw .system(SystemError("mkdir", path: path + "/" + display))
        }
    }

    /// Points the symlink `name` (repository-relative) at `target` (repository-relative) with a
    /// relative link, replacing any old link atomically.
    func setSymlink(_ name: String, to target: String) throws(RepositoryError) {
        let nameComponents = name.split(separator: "/").map(String.init)
        let parent = Array(nameComponents.dropLast())
        let targetComponents = target.split(separator: "/").map(String.init)
        var common = 0
        while common < parent.count, common < targetComponents.count, parent[common] == targetComponents[common] {
            common += 1
        }
        let relative = (Array(repeating: "..", count: parent.count - common) + targetComponents[common...]).joined(separator: "/")
        guard let base = nameComponents.last else { throw .invalidName(name) }
        let parentDirectory = parent.isEmpty ? directory : try openDirectory(parent.joined(separator: "/"), create: true)
        let parentFD = parentDirectory.raw
        if symlinkat(relative, parentFD, base) == 0 { return }
        guard errno == EEXIST else { throw .system(SystemError("symlink", path: path + "/" + name)) }
        if readLink(at: parentFD, base) == relative { return }
        for _ in 0..<16 {
            let temporary = ".symlink-" + randomName()
            guard symlinkat(relative, parentFD, temporary) == 0 else {
                if errno == EEXIST { continue }
                throw .system(SystemError("symlink", path: path + "/" + name))
            }
            guard renameat(parentFD, temporary, parentFD, base) == 0 else {
                let code = errno
                unlinkat(parentFD, temporary, 0)
                throw .system(SystemError("rename", path: path + "/" + name, code: code))
            }
            return
        }
        throw .system(SystemError("symlink", path: path + "/" + name, code: EEXIST))
    }

    /// The whole of a small file below the repository; nil if it does not exist.
    func readFile(_ relative: String) throws(RepositoryError) -> [UInt8]? {
        try systemCall { () throws(SystemError) in try ComposeFSBase.readFile(relative, relativeTo: directory.raw) }
    }

    // MARK: Helpers

    static func hasVerity(_ directory: FileDescriptor, _ name: String, algorithm: FsVerityAlgorithm) -> Bool {
        let fd = openat(directory.raw, name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return (try? FsVerity.measure(fileDescriptor: fd))?.algorithm == algorithm
    }

    private static func makeParentDirectories(of path: String) throws(RepositoryError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/").dropLast() {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { throw .system(SystemError("mkdir", path: prefix)) }
        }
    }
}

func readLink(at dirfd: Int32, _ name: String) -> String? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let count = readlinkat(dirfd, name, &buffer, buffer.count - 1)
    guard count >= 0 else { return nil }
    return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func randomName() -> String {
    let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    return String((0..<12).map { _ in alphabet[Int.random(in: 0..<alphabet.count)] })
}

/// A file with no name until it is linked in (O_TMPFILE).
final class UnnamedFile {
    /// Read-write until `seal()`, read-only after it.
    private(set) var fd: FileDescriptor
    private var sealed = false

    init(in directory: FileDescriptor, mode: mode_t) throws(RepositoryError) {
        fd = try systemCall { () throws(SystemError) in try FileDescriptor.openUnnamed(in: directory, mode: mode) }
    }

    /// Swaps the writable descriptor for a read-only one: the kernel refuses to enable fs-verity
    /// (ETXTBSY) while any descriptor of the file is open for writing. Linking in still works.
    private func seal() throws(FsVerityError) {
        guard !sealed else { return }
        do throws(SystemError) {
            fd = try fd.reopenReadOnly()
            sealed = true
        } catch {
            throw .io(error.code)
        }
    }

    func enableVerity(algorithm: FsVerityAlgorithm) throws(FsVerityError) {
        try seal()
        do {
            try FsVerity.enable(fileDescriptor: fd.raw, algorithm: algorithm)
        } catch .alreadyEnabled {}
    }

    func measure() throws(FsVerityError) -> ObjectID {
        try seal()
        return try FsVerity.measure(fileDescriptor: fd.raw)
    }
}

/// Writes an object whose content arrives in pieces (a file inside a tar layer), hashing it on
/// the way; it gets its name only once complete, and is dropped if the object already exists.
public final class ObjectWriter {
    private let repository: Repository
    private let objects: FileDescriptor
    private let file: UnnamedFile
    private var hasher: FsVerityHasher
    public private(set) var size: UInt64 = 0

    public init(repository: Repository) throws(RepositoryError) {
        self.repository = repository
        objects = try repository.objectsDirectory()
        file = try UnnamedFile(in: objects, mode: 0o644)
        hasher = FsVerityHasher(algorithm: repository.algorithm)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(RepositoryError) {
        hasher.update(bytes)
        size += UInt64(bytes.count)
        try systemCall { () throws(SystemError) in try file.fd.write(bytes) }
    }

    /// Names the object (unless it exists already) and returns its digest.
    public func finish() throws(RepositoryError) -> (id: ObjectID, existed: Bool) {
        let id = hasher.finalize()
        if try repository.existingObjectMatches(objects, id: id, size: Int(size)) { return (id, true) }
        try repository.finish(file, id: id, objects: objects)
        return (id, false)
    }
}
