// fsck: every object's digest against its name, every entry and ref resolvable, every object
// an image or stream names present. Reports as composefs-rs's `cfsctl fsck` does; `repair`
// removes what cannot be right (corrupt objects, stray files, dangling links).

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

    /// One line: "fsck: TYPE: PATH: details".
    public var line: String {
        let details: String
        switch type {
        case "object-digest-mismatch": details = "measured \(value("measured"))"
        case "missing-object-ref", "image-missing-object": details = value("objectId")
        case "missing-named-ref": details = "ref \(value("refName")): \(value("objectId"))"
        default: details = fields.map(\.1).joined(separator: ": ")
        }
        return "fsck: \(type): \(path)" + (details.isEmpty ? "" : ": \(details)")
    }

    func value(_ key: String) -> String { fields.first { $0.0 == key }?.1 ?? "" }
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

    /// The text report; the caller exits non-zero when `ok` is false.
    public var text: String {
        var lines = [
            "meta.json: \(hasMetadata ? "ok" : "error")",
            "objects: \(objectsChecked - objectsCorrupted)/\(objectsChecked) ok",
            "streams: \(streamsChecked - streamsCorrupted)/\(streamsChecked) ok",
            "images: \(imagesChecked - imagesCorrupted)/\(imagesChecked) ok",
        ]
        if brokenLinks > 0 { lines.append("broken symlinks: \(brokenLinks)") }
        if missingObjects > 0 { lines.append("missing objects: \(missingObjects)") }
        lines.append(ok ? "status: ok" : "status: \(errors.count) error(s)")
        lines += errors.map { "  - \($0.line)" }
        lines += repaired.map { "repaired: removed \($0)" }
        return lines.joined(separator: "\n") + "\n"
    }

    /// composefs-rs's `fsck --json` document.
    public var json: String {
        func errorObject(_ error: FsckError) -> String {
            let fields = [("type", error.type), ("path", error.path)] + error.fields
            return "    {\n" + fields.map { "      \(jsonString($0.0)): \(jsonString($0.1))" }.joined(separator: ",\n") + "\n    }"
        }
        var members = [
            "\"ok\": \(ok)", "\"hasMetadata\": \(hasMetadata)",
            "\"objectsChecked\": \(objectsChecked)", "\"objectsCorrupted\": \(objectsCorrupted)",
            "\"streamsChecked\": \(streamsChecked)", "\"streamsCorrupted\": \(streamsCorrupted)",
            "\"imagesChecked\": \(imagesChecked)", "\"imagesCorrupted\": \(imagesCorrupted)",
            "\"brokenLinks\": \(brokenLinks)", "\"missingObjects\": \(missingObjects)",
        ]
        members.append(errors.isEmpty ? "\"errors\": []" : "\"errors\": [\n" + errors.map(errorObject).joined(separator: ",\n") + "\n  ]")
        if !repaired.isEmpty { members.append("\"repaired\": [" + repaired.map(jsonString).joined(separator: ", ") + "]") }
        return "{\n" + members.map { "  " + $0 }.joined(separator: ",\n") + "\n}\n"
    }
}

extension Repository {
    public func fsck(repair: Bool = false) throws(RepositoryError) -> FsckReport {
        // Repairs delete files: no import may be half done meanwhile.
        if repair { try lockExclusive() }
        defer { if repair { try? lockShared() } }
        var report = FsckReport()
        var repaired: [String] = []
        func remove(_ relative: String) {
            guard repair else { return }
            if unlinkat(directory, relative, 0) == 0 { repaired.append(relative) }
        }

        // Objects: named by their own digest, nothing else in objects/.
        for (top, type) in try list("objects") {
            let topPath = "objects/" + top
            guard type == DT_DIR, top.count == 2, Hex.decode(top) != nil else {
                report.objectsChecked += 1
                report.objectsCorrupted += 1
                report.errors.append(FsckError(type: "object-invalid-name", path: topPath, fields: [("detail", "stray entry")]))
                remove(topPath)
                continue
            }
            for (name, _) in try list(topPath) {
                let relative = topPath + "/" + name
                report.objectsChecked += 1
                func fail(_ type: String, _ fields: [(String, String)]) {
                    report.objectsCorrupted += 1
                    report.errors.append(FsckError(type: type, path: relative, fields: fields))
                    remove(relative)
                }
                guard let id = objectID(fromPath: relative), name.count == algorithm.digestSize * 2 - 2 else {
                    fail("object-invalid-name", [("detail", "not an object name (a temporary file left behind?)")])
                    continue
                }
                let fd = openat(directory, relative, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                guard fd >= 0 else {
                    fail("object-open-failed", [("detail", String(cString: strerror(errno)))])
                    continue
                }
                defer { close(fd) }
                let measured: [UInt8]
                do throws(FsVerityError) {
                    measured = try FsVerity.measure(fileDescriptor: fd).digest
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
                if measured != id { fail("object-digest-mismatch", [("measured", Hex.encode(measured))]) }
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
                guard let target = readLink(at: directory, relative), let id = objectID(fromPath: target),
                    let bytes = try? readFile(at: directory, relative)
                else {
                    corrupt = true
                    report.brokenLinks += 1
                    report.errors.append(FsckError(type: "broken-symlink", path: relative, fields: []))
                    remove(relative)
                    continue
                }
                let referenced: [[UInt8]]
                if category == "images" {
                    let fd = openat(directory, "objects/" + objectPath(id), O_RDONLY | O_CLOEXEC)
                    defer { if fd >= 0 { close(fd) } }
                    do throws(RepositoryError) {
                        referenced = try referencedObjects(imageFD: fd, path: relative)
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
                    guard fstatat(directory, "objects/" + objectPath(object), &info, 0) != 0 else { continue }
                    corrupt = true
                    report.missingObjects += 1
                    report.errors.append(FsckError(
                        type: category == "images" ? "image-missing-object" : "missing-object-ref", path: relative,
                        fields: [("objectId", Hex.encode(object))]))
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
                if fstatat(directory, child, &info, 0) != 0 {
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
