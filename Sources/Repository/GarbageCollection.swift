// gc: everything reachable from a ref (images/refs/…, streams/refs/…) or a root given by name
// stays; other objects go, and so do symlinks left pointing at nothing.

import ComposeFSBase
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

public struct GarbageCollectionResult: Equatable, Sendable {
    public var objectsRemoved = 0
    public var bytesRemoved: Int64 = 0
    public var imagesPruned = 0
    public var streamsPruned = 0
}

extension Repository {
    /// Removes what no root reaches. Unless `dryRun`, waits for the exclusive lock, so no
    /// import is half done while it runs.
    public func collectGarbage(roots extraRoots: [String] = [], dryRun: Bool) throws(RepositoryError) -> GarbageCollectionResult {
        if !dryRun { try lockExclusive() }
        defer { if !dryRun { try? lockShared() } }

        // As composefs-rs: anything that does not fit the layout stops gc before it deletes,
        // rather than being guessed about.
        var live = Set<ObjectID>()
        // Images reached from refs or named roots.
        let imageEntries = try entries(of: "images")
        var imageRoots = Set(try refTargets(in: "images/refs", entries: imageEntries))
        imageRoots.formUnion(extraRoots.filter { imageEntries[$0] != nil })
        for name in imageRoots.sorted() {
            guard let id = imageEntries[name] else { continue }
            live.insert(id)
            let fd = openat(directory.raw, "objects/" + id.objectPath, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .imageNotFound(name) }
            let file = FileDescriptor(owning: fd, path: "images/" + name)
            try checkVerity(fd, expected: id, path: "images/" + name)
            live.formUnion(referencedObjects(try readImage(file, path: "images/" + name)))
        }
        // Streams, and the streams they name, recursively.
        let streamEntries = try entries(of: "streams")
        let streamNames = Dictionary(streamEntries.map { ($0.value, $0.key) }, uniquingKeysWith: { first, _ in first })
        var pendingStreams = Set(try refTargets(in: "streams/refs", entries: streamEntries))
        pendingStreams.formUnion(extraRoots.filter { streamEntries[$0] != nil })
        var visited = Set<String>()
        while let name = pendingStreams.popFirst() {
            guard visited.insert(name).inserted, let id = streamEntries[name] else { continue }
            live.insert(id)
            guard let bytes = try readFile("objects/" + id.objectPath) else { throw .notFound("stream \(name)") }
            let references = try SplitStreamReferences(bytes, algorithm: algorithm)
            live.formUnion(references.objects)
            for stream in references.streams {
                live.insert(stream)
                if let next = streamNames[stream] { pendingStreams.insert(next) }
            }
        }

        var result = GarbageCollectionResult()
        for prefix in 0..<256 {
            let prefixName = Hex.encode([UInt8(prefix)])
            let directoryName = "objects/" + prefixName
            for (name, _) in try list(directoryName) {
                guard let id = ObjectID(objectPath: prefixName + "/" + name, algorithm: algorithm) else {
                    throw .corrupt(path: directoryName + "/" + name, reason: "not an object name")
                }
                guard !live.contains(id) else { continue }
                var info = stat()
                guard fstatat(directory.raw, directoryName + "/" + name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
                result.objectsRemoved += 1
                result.bytesRemoved += Int64(info.st_size)
                if !dryRun && unlinkat(directory.raw, directoryName + "/" + name, 0) != 0 && errno != ENOENT {
                    throw .system(SystemError("unlink", path: path + "/" + directoryName + "/" + name))
                }
            }
        }
        result.imagesPruned = try pruneBrokenLinks(in: "images", dryRun: dryRun)
        result.streamsPruned = try pruneBrokenLinks(in: "streams", dryRun: dryRun)
        return result
    }

    /// First-level entries of images/ or streams/ (not refs/, not leftover temporary links),
    /// by name, with the object each names.
    func entries(of category: String) throws(RepositoryError) -> [String: ObjectID] {
        var result: [String: ObjectID] = [:]
        for (name, type) in try list(category) where name != "refs" && !name.hasPrefix(".symlink-") {
            guard type == DT_LNK, let target = readLink(at: directory.raw, category + "/" + name),
                let id = ObjectID(objectPath: target, algorithm: algorithm)
            else {
                throw .corrupt(path: category + "/" + name, reason: "not a symlink to an object (category directory contains non-symlink)")
            }
            result[name] = id
        }
        return result
    }

    /// The entry names (last component of each target) that symlinks under `refs` point at;
    /// each must be one of `entries`.
    func refTargets(in refs: String, entries: [String: ObjectID]) throws(RepositoryError) -> [String] {
        var targets: [String] = []
        for (name, type) in try list(refs) {
            let child = refs + "/" + name
            if type == DT_DIR {
                targets += try refTargets(in: child, entries: entries)
            } else if type == DT_LNK {
                guard let target = readLink(at: directory.raw, child), let last = target.split(separator: "/").last,
                    entries[String(last)] != nil
                else {
                    throw .corrupt(path: child, reason: "the ref points at an entry that does not exist")
                }
                targets.append(String(last))
            } else {
                throw .corrupt(path: child, reason: "unexpected file type in refs (neither a directory nor a symlink)")
            }
        }
        return targets
    }

    /// Removes symlinks under `category` (entries and refs) whose target is gone, and
    /// temporary links a killed writer left. Returns how many there were.
    func pruneBrokenLinks(in category: String, dryRun: Bool) throws(RepositoryError) -> Int {
        var pruned = 0
        func visit(_ relative: String) throws(RepositoryError) {
            for (name, type) in try list(relative) {
                let child = relative + "/" + name
                if type == DT_DIR {
                    if child == category + "/refs" || relative.hasPrefix(category + "/refs") { try visit(child) }
                    continue
                }
                guard type == DT_LNK else { continue }
                var info = stat()
                let broken = fstatat(directory.raw, child, &info, 0) != 0 && errno == ENOENT
                guard broken || name.hasPrefix(".symlink-") else { continue }
                pruned += 1
                if !dryRun && unlinkat(directory.raw, child, 0) != 0 && errno != ENOENT {
                    throw .system(SystemError("unlink", path: path + "/" + child))
                }
            }
        }
        try visit(category)
        return pruned
    }

    /// Names and d_types in a directory below the repository; empty if it does not exist.
    func list(_ relative: String) throws(RepositoryError) -> [(String, UInt8)] {
        try Self.list(directory, relative, path: path)
    }

    /// Names and d_types in a directory below `directory` (at `path`), sorted by name unless
    /// `sorted` is false (then in the order the file system gives); empty if it does not exist.
    static func list(
        _ directory: FileDescriptor, _ relative: String, path: String, sorted: Bool = true
    ) throws(RepositoryError) -> [(String, UInt8)] {
        let fd = openat(directory.raw, relative, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT || errno == ENOTDIR { return [] }
            throw .system(SystemError("open", path: path + "/" + relative))
        }
        guard let stream = fdopendir(fd) else {
            let code = errno
            close(fd)
            throw .system(SystemError("opendir", path: path + "/" + relative, code: code))
        }
        defer { closedir(stream) }
        var result: [(String, UInt8)] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            var type = entry.pointee.d_type
            if type == DT_UNKNOWN {
                var info = stat()
                if fstatat(directory.raw, relative + "/" + name, &info, AT_SYMLINK_NOFOLLOW) == 0 {
                    switch info.st_mode & S_IFMT {
                    case S_IFDIR: type = UInt8(DT_DIR)
                    case S_IFLNK: type = UInt8(DT_LNK)
                    case S_IFREG: type = UInt8(DT_REG)
                    default: break
                    }
                }
            }
            result.append((name, type))
        }
        return sorted ? result.sorted { $0.0 < $1.0 } : result
    }
}
