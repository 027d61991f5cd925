// A composefs repository (composefs-rs doc/repository.md): objects named by fs-verity digest,
// images/ and streams/ entries naming objects, refs/ naming entries.
//
// Crash safety: objects are written as unnamed files (O_TMPFILE) that get their name only
// once complete, so a killed writer leaves nothing behind; symlinks are replaced by rename.
// Concurrency: every user holds a shared flock on the repository directory; gc takes it
// exclusively, so it never runs while an import is between writing objects and naming them.

import CComposeFSSys
import ComposeFS
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

public final class Repository: @unchecked Sendable {
    public let path: String
    /// The repository directory, also the lock.
    let directory: Int32
    public let metadata: RepositoryMetadata
    /// Whether meta.json has fs-verity: then every object must have it too.
    public let isSecure: Bool

    public var algorithm: FsVerityAlgorithm { metadata.algorithm.hash }

    // MARK: Opening and creating

    /// Opens an initialized repository and takes the shared lock.
    public init(path: String) throws(RepositoryError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(operation: "opening repository", path: path, code: errno) }
        directory = fd
        do throws(RepositoryError) {
            try Self.lock(fd, LOCK_SH, path: path)
            guard let bytes = try readFile(at: fd, "meta.json") else { throw .notInitialized(path: path) }
            metadata = try RepositoryMetadata(decoding: bytes)
            try metadata.checkSupported()
            isSecure = Self.hasVerity(at: fd, "meta.json", algorithm: metadata.algorithm.hash)
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(directory) }

    public enum InitResult: Equatable { case created, alreadyInitialized }

    /// Creates the repository directory (mode 0700) and meta.json. meta.json gets fs-verity
    /// unless `insecure`; where the file system cannot do that, initialization fails.
    public static func initialize(
        at path: String, algorithm: RepositoryAlgorithm, insecure: Bool
    ) throws(RepositoryError) -> InitResult {
        try makeParentDirectories(of: path)
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw .system(operation: "mkdir", path: path, code: errno) }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(operation: "open", path: path, code: errno) }
        defer { close(fd) }
        let wanted = RepositoryMetadata(algorithm: algorithm)
        if let existing = try readFile(at: fd, "meta.json") {
            let current = try RepositoryMetadata(decoding: existing)
            guard current == wanted else {
                throw .alreadyInitialized(path: path, algorithm: current.algorithm.description)
            }
            return .alreadyInitialized
        }
        let file = try UnnamedFile(in: fd, directoryPath: path, mode: 0o644)
        try file.write(wanted.encoded())
        try file.sync()
        if !insecure {
            do throws(FsVerityError) {
                try file.enableVerity(algorithm: algorithm.hash)
            } catch {
                throw .unsupported(
                    "cannot enable fs-verity on \(path)/meta.json: \(error) (use --insecure on file systems without fs-verity)")
            }
        }
        do throws(RepositoryError) {
            try file.link(as: "meta.json", in: fd)
        } catch .system(_, _, EEXIST) {
            // Initialized concurrently; it must agree with us.
            return try initialize(at: path, algorithm: algorithm, insecure: insecure)
        }
        return .created
    }

    // MARK: Locking

    /// Trades the shared lock for the exclusive one (waiting for every other user to finish).
    public func lockExclusive() throws(RepositoryError) { try Self.lock(directory, LOCK_EX, path: path) }
    public func lockShared() throws(RepositoryError) { try Self.lock(directory, LOCK_SH, path: path) }

    private static func lock(_ fd: Int32, _ operation: Int32, path: String) throws(RepositoryError) {
        while flock(fd, operation) != 0 {
            guard errno == EINTR else { throw .system(operation: "flock", path: path, code: errno) }
        }
    }

    // MARK: Objects

    /// "xx/yyyy…" for a digest.
    public func objectPath(_ id: [UInt8]) -> String {
        String(decoding: ContentProcessor.objectPath(digest: id), as: UTF8.self)
    }

    /// The digest a "xx/yyyy…" path (or the tail of a longer one) names, if any.
    func objectID(fromPath text: String) -> [UInt8]? {
        let length = algorithm.digestSize * 2 + 1
        guard text.utf8.count >= length else { return nil }
        let tail = Array(text.utf8.suffix(length))
        guard tail[2] == UInt8(ascii: "/") else { return nil }
        let hex = String(decoding: tail[0..<2] + tail[3...], as: UTF8.self)
        guard let id = Hex.decode(hex), id.count == algorithm.digestSize else { return nil }
        return id
    }

    /// The open objects/ directory, created on first use.
    func objectsDirectory() throws(RepositoryError) -> Int32 {
        try openDirectory("objects", create: true)
    }

    /// Stores `bytes` unless an object with their digest exists; returns the digest.
    @discardableResult
    public func ensureObject(_ bytes: [UInt8]) throws(RepositoryError) -> [UInt8] {
        try storeObject(bytes).id
    }

    /// Stores `bytes` unless an object with their digest exists; says which it was.
    public func storeObject(_ bytes: [UInt8]) throws(RepositoryError) -> (id: [UInt8], existed: Bool) {
        let id = FsVerity.digest(of: bytes, algorithm: algorithm)
        let objects = try objectsDirectory()
        defer { close(objects) }
        let name = objectPath(id)
        if try existingObjectMatches(objects, name, id: id, size: bytes.count) { return (id, true) }
        try makeDirectory(at: objects, String(name.prefix(2)), path: "objects/" + name.prefix(2))
        let file = try UnnamedFile(in: objects, directoryPath: path + "/objects", mode: 0o644)
        try file.write(bytes)
        try finish(file, id: id, objects: objects, name: name)
        return (id, false)
    }

    /// Copies an open file (of `size` bytes, fs-verity digest `id`) in as an object.
    func ensureObject(copying source: Int32, id: [UInt8], size: Int, objects: Int32) throws(RepositoryError) {
        let name = objectPath(id)
        if try existingObjectMatches(objects, name, id: id, size: size) { return }
        try makeDirectory(at: objects, String(name.prefix(2)), path: "objects/" + name.prefix(2))
        let file = try UnnamedFile(in: objects, directoryPath: path + "/objects", mode: 0o644)
        do throws(SystemError) {
            try copyContents(from: source, to: file.fd, destination: path + "/objects/" + name)
        } catch {
            throw .system(operation: error.operation, path: error.path, code: error.code)
        }
        var info = stat()
        guard fstat(file.fd, &info) == 0, Int(info.st_size) == size else {
            throw .corrupt(path: path + "/objects/" + name, reason: "source changed size while it was copied")
        }
        try finish(file, id: id, objects: objects, name: name)
    }

    /// Enables verity (required in a secure repository), checks the kernel agrees on the
    /// digest, then names the file. Someone else naming it first is fine: same content.
    func finish(_ file: UnnamedFile, id: [UInt8], objects: Int32, name: String) throws(RepositoryError) {
        var measured: [UInt8]?
        do throws(FsVerityError) {
            try file.enableVerity(algorithm: algorithm)
            measured = try FsVerity.measure(fileDescriptor: file.readOnlyDescriptor()).digest
        } catch .notSupported where !isSecure {
            // An insecure repository on a file system without fs-verity.
        } catch {
            throw .corrupt(path: "objects/" + name, reason: "enabling fs-verity: \(error)")
        }
        if let measured, measured != id {
            throw .digestMismatch(path: "objects/" + name, expected: Hex.encode(id), actual: Hex.encode(measured))
        }
        do throws(RepositoryError) {
            try file.link(as: name, in: objects)
        } catch .system(_, _, EEXIST) {}
    }

    /// Whether `name` exists with the right size (and, where the kernel can say, digest).
    func existingObjectMatches(_ objects: Int32, _ name: String, id: [UInt8], size: Int) throws(RepositoryError) -> Bool {
        let fd = openat(objects, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            if errno == ENOENT { return false }
            throw .system(operation: "open", path: path + "/objects/" + name, code: errno)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, Int(info.st_size) == size else { return false }
        if let measured = try? FsVerity.measure(fileDescriptor: fd).digest, measured != id {
            throw .digestMismatch(path: "objects/" + name, expected: Hex.encode(id), actual: Hex.encode(measured))
        }
        return true
    }

    /// Opens an object for reading; in a secure repository the kernel must vouch for it.
    public func openObject(_ id: [UInt8]) throws(RepositoryError) -> Int32 {
        let name = "objects/" + objectPath(id)
        let fd = openat(directory, name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(operation: "open", path: path + "/" + name, code: errno) }
        do throws(RepositoryError) {
            try checkVerity(fd, expected: id, path: name)
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// The kernel's digest must equal `expected`; a missing digest is only allowed in an
    /// insecure repository.
    func checkVerity(_ fd: Int32, expected: [UInt8], path name: String) throws(RepositoryError) {
        let measured: [UInt8]
        do throws(FsVerityError) {
            measured = try FsVerity.measure(fileDescriptor: fd).digest
        } catch .notEnabled, .notSupported {
            if isSecure { throw .verityMissing(path: name) }
            return
        } catch {
            throw .corrupt(path: name, reason: "measuring fs-verity: \(error)")
        }
        guard measured == expected else {
            throw .digestMismatch(path: name, expected: Hex.encode(expected), actual: Hex.encode(measured))
        }
    }

    /// Flushes everything written so far, before names that promise it exists appear.
    func sync() throws(RepositoryError) {
        let result = cfs_syncfs(directory)
        guard result == 0 else { throw .system(operation: "syncfs", path: path, code: -result) }
    }

    // MARK: Directories and symlinks

    /// Opens a directory below the repository, creating it (and its parents) if asked.
    func openDirectory(_ relative: String, create: Bool) throws(RepositoryError) -> Int32 {
        if create {
            var prefix = ""
            for component in relative.split(separator: "/") {
                prefix += prefix.isEmpty ? String(component) : "/" + component
                try makeDirectory(at: directory, prefix, path: prefix)
            }
        }
        let fd = openat(directory, relative, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system(operation: "open", path: path + "/" + relative, code: errno) }
        return fd
    }

    func makeDirectory(at dirfd: Int32, _ name: String, path display: String) throws(RepositoryError) {
        if mkdirat(dirfd, name, 0o755) != 0 && errno != EEXIST {
            throw .system(operation: "mkdir", path: path + "/" + display, code: errno)
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
        if !parent.isEmpty { close(try openDirectory(parent.joined(separator: "/"), create: true)) }
        guard let base = nameComponents.last else { throw .invalidName(name) }
        let parentFD = parent.isEmpty ? dup(directory) : try openDirectory(parent.joined(separator: "/"), create: false)
        defer { close(parentFD) }
        if symlinkat(relative, parentFD, base) == 0 { return }
        guard errno == EEXIST else { throw .system(operation: "symlink", path: path + "/" + name, code: errno) }
        if readLink(at: parentFD, base) == relative { return }
        for _ in 0..<16 {
            let temporary = ".symlink-" + randomName()
            guard symlinkat(relative, parentFD, temporary) == 0 else {
                if errno == EEXIST { continue }
                throw .system(operation: "symlink", path: path + "/" + name, code: errno)
            }
            guard renameat(parentFD, temporary, parentFD, base) == 0 else {
                let code = errno
                unlinkat(parentFD, temporary, 0)
                throw .system(operation: "rename", path: path + "/" + name, code: code)
            }
            return
        }
        throw .system(operation: "symlink", path: path + "/" + name, code: EEXIST)
    }

    // MARK: Helpers

    static func hasVerity(at dirfd: Int32, _ name: String, algorithm: FsVerityAlgorithm) -> Bool {
        let fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard let measured = try? FsVerity.measure(fileDescriptor: fd) else { return false }
        return measured.algorithm == algorithm
    }

    private static func makeParentDirectories(of path: String) throws(RepositoryError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/").dropLast() {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw .system(operation: "mkdir", path: prefix, code: errno)
            }
        }
    }
}

/// Reads a whole small file below `dirfd`; nil if it does not exist.
func readFile(at dirfd: Int32, _ name: String) throws(RepositoryError) -> [UInt8]? {
    let fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        if errno == ENOENT { return nil }
        throw .system(operation: "open", path: name, code: errno)
    }
    defer { close(fd) }
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            throw .system(operation: "read", path: name, code: errno)
        }
        if count == 0 { return result }
        result += buffer[..<count]
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

/// A file with no name until `link` gives it one (O_TMPFILE).
final class UnnamedFile {
    let fd: Int32
    let directoryPath: String
    private var readOnly: Int32 = -1

    init(in directory: Int32, directoryPath: String, mode: mode_t) throws(RepositoryError) {
        let fd = cfs_open_tmpfile(directory, mode)
        guard fd >= 0 else {
            throw .system(operation: "create unnamed file (O_TMPFILE) in", path: directoryPath, code: -fd)
        }
        self.fd = fd
        self.directoryPath = directoryPath
    }

    deinit {
        close(fd)
        if readOnly >= 0 { close(readOnly) }
    }

    func write(_ bytes: [UInt8]) throws(RepositoryError) {
        try withBytes(bytes[...]) { (buffer) throws(RepositoryError) in try write(buffer) }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(RepositoryError) {
        var offset = 0
        while offset < bytes.count {
            let count = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if count < 0 {
                if errno == EINTR { continue }
                throw .system(operation: "write", path: directoryPath, code: errno)
            }
            offset += count
        }
    }

    func sync() throws(RepositoryError) {
        guard fsync(fd) == 0 else { throw .system(operation: "fsync", path: directoryPath, code: errno) }
    }

    /// fs-verity can only be enabled through a descriptor not open for writing.
    func readOnlyDescriptor() -> Int32 {
        if readOnly < 0 { readOnly = open("/proc/self/fd/\(fd)", O_RDONLY | O_CLOEXEC) }
        return readOnly
    }

    func enableVerity(algorithm: FsVerityAlgorithm) throws(FsVerityError) {
        let fd = readOnlyDescriptor()
        guard fd >= 0 else { throw .io(errno) }
        do {
            try FsVerity.enable(fileDescriptor: fd, algorithm: algorithm)
        } catch .alreadyEnabled {}
    }

    func link(as name: String, in directory: Int32? = nil) throws(RepositoryError) {
        let target = directory ?? AT_FDCWD
        let fullName = directory == nil ? directoryPath + "/" + name : name
        let result = cfs_link_tmpfile(fd, target, fullName)
        guard result == 0 else { throw .system(operation: "link", path: directoryPath + "/" + name, code: -result) }
    }
}

/// Writes an object whose content arrives in pieces (a file inside a tar layer), hashing it on
/// the way; it gets its name only once complete, and is dropped if the object already exists.
public final class ObjectWriter {
    private let repository: Repository
    private let objects: Int32
    private let file: UnnamedFile
    private var hasher: FsVerityHasher
    public private(set) var size: UInt64 = 0

    public init(repository: Repository) throws(RepositoryError) {
        self.repository = repository
        objects = try repository.objectsDirectory()
        do {
            file = try UnnamedFile(in: objects, directoryPath: repository.path + "/objects", mode: 0o644)
        } catch {
            close(objects)
            throw error
        }
        hasher = FsVerityHasher(algorithm: repository.algorithm)
    }

    deinit { close(objects) }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(RepositoryError) {
        hasher.update(bytes)
        size += UInt64(bytes.count)
        try file.write(bytes)
    }

    /// Names the object (unless it exists already) and returns its digest.
    public func finish() throws(RepositoryError) -> (id: [UInt8], existed: Bool) {
        let id = hasher.finalize()
        let name = repository.objectPath(id)
        if try repository.existingObjectMatches(objects, name, id: id, size: Int(size)) { return (id, true) }
        try repository.makeDirectory(at: objects, String(name.prefix(2)), path: "objects/" + name.prefix(2))
        try repository.finish(file, id: id, objects: objects, name: name)
        return (id, false)
    }
}
