// fsck: every object's digest against its name, every entry and ref resolvable, every object
// an image or stream names present. Finds what composefs-rs's `cfsctl fsck` finds, with its
// error types; `repair` removes what cannot be right (corrupt objects, stray files, dangling
// links).

import ComposeFSBase
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

public struct FsckError: Equatable, Sendable {
    /// composefs-rs's error type names: object-digest-mismatch, broken-symlink, …
    public var type: String
    public var path: String
    /// Extra fields in report order, e.g. ("measured", hex).
    public var fields: [(String, String)]

    public static func == (a: FsckError, b: FsckError) -> Bool {
        a.type == b.type && a.path == b.path && a.fields.map(\.0) == b.fields.map(\.0) && a.fields.map(\.1) == b.fields.map(\.1)
    }

    public func value(_ key: String) -> String { fields.first { $0.0 == key }?.1 ?? "" }
}

public struct FsckReport: Equatable, Sendable {
    public var hasMetadata = true
    public var objectsChecked = 0
    public var objectsCorrupted = 0
    public var streamsChecked = 0
    public var streamsCorrupted = 0
    public var imagesChecked = 0
    public var imagesCorrupted = 0
    public var brokenLinks = 0
    public var missingObjects = 0
    public var errors: [FsckError] = []
    /// What `repair` removed, as repository-relative paths.
    public var repaired: [String] = []

    public var ok: Bool { errors.isEmpty }

}

extension Repository {
    /// Checks the repository; `metadataOnly` leaves the objects' digests unchecked.
    public func fsck(repair: Bool = false, metadataOnly: Bool = false) throws(RepositoryError) -> FsckReport {
        // Repairs delete files: no import may be half done meanwhile.
        if repair { try lockExclusive() }
        defer { if repair { try? lockShared() } }
        var report = FsckReport()
        var repaired: [String] = []
        func remove(_ relative: String) {
            guard repair else { return }
            if unlinkat(directory.raw, relative, 0) == 0 { repaired.append(relative) }
        }

        // meta.json, read again: it must still parse and name the algorithm in use.
        do throws(RepositoryError) {
            if let bytes = try readFile("meta.json") {
                let current = try RepositoryMetadata(decoding: bytes)
                if current.algorithm != metadata.algorithm {
                    report.errors.append(FsckError(
                        type: "metadata-algorithm-mismatch", path: "meta.json",
                        fields: [("expected", current.algorithm.description), ("actual", algorithm.name)]))
                }
            } else {
                report.hasMetadata = false
            }
        } catch {
            report.errors.append(FsckError(type: "metadata-parse-failed", path: "meta.json", fields: [("detail", "\(error)")]))
        }

        // Objects, each named by its own digest. Only objects/XX directories hold objects; nothing else there is looked at, as in composefs-rs.
        for (top, type) in try list("objects") where !metadataOnly && type == DT_DIR && top.utf8.count == 2 && Hex.decode(top) != nil {
            let topPath = "objects/" + top
            for (name, _) in try list(topPath) {
                let relative = topPath + "/" + name
                report.objectsChecked += 1
                func fail(_ type: String, _ fields: [(String, String)]) {
                    report.objectsCorrupted += 1
                    report.errors.append(FsckError(type: type, path: relative, fields: fields))
                    remove(relative)
                }
                guard let id = ObjectID(objectPath: relative, algorithm: algorithm), name.count == algorithm.digestSize * 2 - 2 else {
                    fail("object-invalid-name", [("detail", "not an object name (a temporary file left behind?)")])
                    continue
                }
                let fd = openat(directory.raw, relative, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                guard fd >= 0 else {
                    fail("object-open-failed", [("detail", String(cString: strerror(errno)))])
                    continue
                }
                defer { close(fd) }
                let measured: ObjectID
                do throws(FsVerityError) {
                    measured = try FsVerity.measure(fileDescriptor: fd)
                } catch .notEnabled, .notSupported {
                    guard !isSecure else {
                        fail("object-verity-missing", [])
                        continue
                    }
                    do throws(FsVerityError) {
                        measured = try FsVerity.digest(fileDescriptor: fd, algorithm: algorithm)
                    } catch {
                        fail("object-verity-failed", [("detail", "\(error)")])
                        continue
                    }
                } catch {
                    fail("object-verity-failed", [("detail", "\(error)")])
                    continue
                }
                if measured != id { fail("object-digest-mismatch", [("measured", measured.hex)]) }
            }
        }

        // images/ and streams/: links that resolve, to content whose objects exist.
        for category in ["streams", "images"] {
            for (name, type) in try list(category) where name != "refs" {
                let relative = category + "/" + name
                var corrupt = false
                defer {
                    if category == "images" {
                        report.imagesChecked += 1
                        if corrupt { report.imagesCorrupted += 1 }
                    } else {
                        report.streamsChecked += 1
                        if corrupt { report.streamsCorrupted += 1 }
                    }
                }
                guard type == DT_LNK else {
                    corrupt = true
                    report.errors.append(FsckError(type: "entry-not-symlink", path: relative, fields: []))
                    continue
                }
                guard let target = readLink(at: directory.raw, relative), let id = ObjectID(objectPath: target, algorithm: algorithm),
                    let bytes = try? readFile(relative)
                else {
                    corrupt = true
                    report.brokenLinks += 1
                    report.errors.append(FsckError(type: "broken-symlink", path: relative, fields: []))
                    remove(relative)
                    continue
                }
                let referenced: [ObjectID]
                if category == "images" {
                    do throws(RepositoryError) {
                        let file = try systemCall { () throws(SystemError) in
                            try FileDescriptor.open("objects/" + id.objectPath, O_RDONLY, relativeTo: directory)
                        }
                        referenced = referencedObjects(try readImage(file, path: relative))
                    } catch {
                        corrupt = true
                        report.errors.append(FsckError(type: "image-invalid", path: relative, fields: [("detail", "\(error)")]))
                        continue
                    }
                } else {
                    do throws(RepositoryError) {
                        let references = try SplitStreamReferences(bytes, algorithm: algorithm)
                        referenced = references.objects + references.streams
                    } catch {
                        corrupt = true
                        report.errors.append(FsckError(type: "stream-open-failed", path: relative, fields: [("detail", "\(error)")]))
                        continue
                    }
                }
                for object in referenced {
                    var info = stat()
                    guard fstatat(directory.raw, "objects/" + object.objectPath, &info, 0) != 0 else { continue }
                    corrupt = true
                    report.missingObjects += 1
                    report.errors.append(FsckError(
                        type: category == "images" ? "image-missing-object" : "missing-object-ref", path: relative,
                        fields: [("objectId", object.hex)]))
                }
            }
            try checkRefs(category + "/refs", report: &report, remove: remove)
        }
        report.repaired = repaired
        return report
    }

    private func checkRefs(_ relative: String, report: inout FsckReport, remove: (String) -> Void) throws(RepositoryError) {
        for (name, type) in try list(relative) {
            let child = relative + "/" + name
            if type == DT_DIR {
                try checkRefs(child, report: &report, remove: remove)
            } else if type == DT_LNK {
                var info = stat()
                if fstatat(directory.raw, child, &info, 0) != 0 {
                    report.brokenLinks += 1
                    report.errors.append(FsckError(type: "broken-symlink", path: child, fields: []))
                    remove(child)
                }
            } else {
                report.errors.append(FsckError(type: "unexpected-file-type", path: child, fields: [("detail", "RegularFile")]))
            }
        }
    }
}
