// What the `cfsctl oci` listing commands print, in composefs-rs's formats: the images table and
// JSON, `inspect`, a layer's entries and summary, and the OCI part of fsck.

import ComposeFS
import Dumpfile
import EROFS
import FsVerity
import Repository

public struct ImageSummary: Sendable {
    public var name: String
    public var manifestDigest: Digest
    public var isContainer: Bool
    public var architecture: String
    public var os: String
    public var created: String?
    public var layerCount: Int
    public var referrerCount: Int
}

extension ImageStore {
    /// Every tagged image that opens (others are left out, as composefs-rs does).
    public func images() throws(OCIError) -> [ImageSummary] {
        try tags().compactMap { tag in
            guard let image = try? open(manifest: tag.manifest) else { return nil }
            return ImageSummary(
                name: tag.name, manifestDigest: tag.manifest, isContainer: true,
                architecture: image.config.architecture ?? "", os: image.config.os ?? "", created: image.config.created,
                layerCount: image.manifest.layers.count, referrerCount: (try? referrers(of: tag.manifest).count) ?? 0)
        }
    }

    public static func imagesTable(_ images: [ImageSummary]) -> String {
        guard !images.isEmpty else { return "No images found\n" }
        let header = ["NAME", "DIGEST", "ARCH", "LAYERS", "REFS"]
        let rows = images.map { image in
            [image.name, String(image.manifestDigest.hex.prefix(12)), image.architecture.isEmpty ? "artifact" : image.architecture,
             String(image.layerCount), String(image.referrerCount)]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ left: String, _ fill: String, _ middle: String, _ right: String) -> String {
            left + widths.map { String(repeating: fill, count: $0 + 2) }.joined(separator: middle) + right + "\n"
        }
        func row(_ cells: [String]) -> String {
            "│" + zip(cells, widths).map { " " + $0 + String(repeating: " ", count: $1 - $0.count) + " " }.joined(separator: "┆") + "│\n"
        }
        var text = line("┌", "─", "┬", "┐") + row(header) + line("╞", "═", "╪", "╡")
        text += rows.map(row).joined(separator: line("├", "╌", "┼", "┤"))
        return text + line("└", "─", "┴", "┘")
    }

    public static func imagesJSON(_ images: [ImageSummary]) -> String {
        JSONValue.array(images.map { image in
            .object([
                ("name", .string(image.name)), ("manifestDigest", .string(image.manifestDigest.description)),
                ("isContainer", .bool(image.isContainer)), ("architecture", .string(image.architecture)),
                ("os", .string(image.os)), ("created", image.created.map { .string($0) } ?? .null),
                ("layerCount", .integer(Int64(image.layerCount))), ("referrerCount", .integer(Int64(image.referrerCount))),
            ])
        }).pretty() + "\n"
    }

    /// `inspect`: manifest, config and the composefs image, keys sorted at every level.
    public func inspect(_ image: StoredImage) throws(OCIError) -> String {
        var members: [(String, JSONValue)] = []
        if let id = image.imageID { members.append(("composefs_erofs", .string(Hex.encode(id)))) }
        members.append(("config", try JSONValue.parse(image.configBytes, what: "config")))
        members.append(("manifest", try JSONValue.parse(image.manifestBytes, what: "manifest")))
        let referrers = try referrers(of: image.manifestDigest)
        members.append(("referrers", .array(referrers.map { .object([("digest", .string($0.description))]) })))
        return JSONValue.object(members).pretty() + "\n"
    }

    /// A stored layer's entries, each with where its content is.
    public func layerEntries(_ diffID: Digest) throws(OCIError) -> (entries: [LayerEntry], stream: SplitStream, id: [UInt8]) {
        let name = Self.layerStream(diffID)
        guard let id = repository.streamID(name) else { throw .notFound("Layer \(diffID)") }
        do {
            let stream = try repository.openStream(name)
            return (try LayerReader.entries(of: stream, layer: diffID.description), stream, id)
        } catch let error as OCIError {
            throw error
        } catch let error as RepositoryError {
            throw .repository(error)
        } catch {
            throw .badDocument(what: name, reason: "\(error)")
        }
    }

    /// One composefs-dump(5) line per tar entry, in archive order.
    public static func layerListing(_ entries: [LayerEntry]) -> String {
        var out: [UInt8] = []
        func field(_ bytes: [UInt8]?) {
            out.append(0x20)
            Escaping.escapeOptional(bytes, style: .loneDash, into: &out)
        }
        for item in entries {
            let entry = item.entry
            let components = (try? Rootfs.components(of: entry.path, layer: "")) ?? [entry.path]
            let path = [UInt8(ascii: "/")] + Array(components.joined(separator: [UInt8(ascii: "/")]))
            Escaping.escape(path, into: &out)
            if entry.kind == .hardlink {
                out += Array(" 0 @120000 - - - - 0.0".utf8)
                field([UInt8(ascii: "/")] + Array(((try? Rootfs.components(of: entry.linkTarget, layer: "")) ?? []).joined(separator: [UInt8(ascii: "/")])))
                out += Array(" - -\n".utf8)
                continue
            }
            let type: UInt32
            switch entry.kind {
            case .regular: type = FileMode.regular
            case .directory: type = FileMode.directory
            case .symlink: type = FileMode.symlink
            case .characterDevice: type = FileMode.characterDevice
            case .blockDevice: type = FileMode.blockDevice
            case .fifo, .hardlink: type = FileMode.fifo
            }
            let size = entry.kind == .symlink ? UInt64(entry.linkTarget.count) : entry.size
            let rdev = Rootfs.deviceNumber(major: entry.deviceMajor, minor: entry.deviceMinor)
            out += Array(" \(size) \(String(type | entry.permissions, radix: 8)) 1 \(entry.uid) \(entry.gid) \(rdev) \(entry.mtime.seconds).\(entry.mtime.nanoseconds)".utf8)
            var payload: [UInt8]?
            var content: [UInt8]?
            var digest: [UInt8]?
            switch (entry.kind, item.content) {
            case (.symlink, _): payload = entry.linkTarget
            case let (.regular, .inline(bytes)): content = bytes
            case let (.regular, .object(id)):
                payload = ContentProcessor.objectPath(digest: id)
                digest = Array(Hex.encode(id).utf8)
            default: break
            }
            field(payload)
            field(content)
            field(digest)
            for xattr in entry.xattrs.sorted(by: { compareBytes($0.key, $1.key) < 0 }) {
                out.append(0x20)
                Escaping.escape(xattr.key, style: .equals, into: &out)
                out.append(UInt8(ascii: "="))
                Escaping.escape(xattr.value, style: .equals, into: &out)
            }
            out.append(0x0A)
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `layer --json`.
    public func layerSummary(_ diffID: Digest) throws(OCIError) -> String {
        let (entries, stream, id) = try layerEntries(diffID)
        var externalSize: UInt64 = 0
        for item in entries { if case .object = item.content { externalSize += item.entry.dataSize } }
        return JSONValue.object([
            ("diffId", .string(diffID.description)), ("verity", .string(Hex.encode(id))),
            ("size", .integer(Int64(stream.size))), ("entryCount", .integer(Int64(entries.count))),
            ("splitstream", .object([
                ("externalObjects", .integer(Int64(stream.references.objects.count))),
                ("externalSize", .integer(Int64(externalSize))),
                ("inlineSize", .integer(Int64(stream.size) - Int64(externalSize))),
            ])),
        ]).pretty() + "\n"
    }
}

// MARK: fsck

/// The OCI half of `oci fsck`: each tagged image's documents and layers.
public struct ImageCheckReport: Sendable {
    public struct Problem: Sendable {
        public var type: String
        public var name: String
        /// Extra fields in order (detail, expected, actual, digest, diffId).
        public var fields: [(String, String)]

        var line: String { "fsck: \(type): \(name): " + fields.map(\.1).joined(separator: ": ") }
    }

    public var imagesChecked = 0
    public var imagesCorrupted = 0
    public var problems: [Problem] = []

    public var ok: Bool { problems.isEmpty }

    public var text: String {
        var text = "oci images: \(imagesChecked - imagesCorrupted)/\(imagesChecked) ok\n"
        if !problems.isEmpty {
            text += "oci errors: \(problems.count)\n" + problems.map { "  - \($0.line)\n" }.joined()
        }
        return text
    }

    public func json(repository: FsckReport) -> String {
        let repo = JSONValue.parse(repository)
        return JSONValue.object([
            ("ok", .bool(ok && repository.ok)), ("repoResult", repo),
            ("imagesChecked", .integer(Int64(imagesChecked))), ("imagesCorrupted", .integer(Int64(imagesCorrupted))),
            ("errors", .array(problems.map { problem in
                .object([("type", .string(problem.type)), ("name", .string(problem.name))] + problem.fields.map { ($0.0, .string($0.1)) })
            })),
        ]).pretty() + "\n"
    }
}

extension JSONValue {
    /// The repository fsck document without its "ok" member.
    static func parse(_ report: FsckReport) -> JSONValue {
        guard case let .object(members)? = try? JSONValue.parse(Array(report.json.utf8), what: "fsck") else { return .null }
        // Re-parsing sorted the keys; keep composefs-rs's order from the text instead.
        let order = ["hasMetadata", "objectsChecked", "objectsCorrupted", "streamsChecked", "streamsCorrupted",
                     "imagesChecked", "imagesCorrupted", "brokenLinks", "missingObjects", "errors", "repaired"]
        return .object(order.compactMap { key in members.first { $0.0 == key } })
    }
}

extension ImageStore {
    /// Checks every tagged image (or the one named), stopping at each image's first problem.
    public func checkImages(only name: String? = nil) throws(OCIError) -> ImageCheckReport {
        var report = ImageCheckReport()
        var targets: [(name: String, manifest: Digest?)] = []
        if let name {
            targets = [(name, try? resolve(name))]
        } else {
            targets = try tags().map { ($0.name, $0.manifest) }
        }
        for target in targets {
            report.imagesChecked += 1
            if let problem = check(target.name, target.manifest) {
                report.imagesCorrupted += 1
                report.problems.append(problem)
            }
        }
        return report
    }

    private func check(_ name: String, _ digest: Digest?) -> ImageCheckReport.Problem? {
        typealias Problem = ImageCheckReport.Problem
        guard !name.hasPrefix("@") else {
            return Problem(type: "invalid-ref-name", name: name, fields: [("detail", "leading '@' is reserved for digest references")])
        }
        guard let digest else { return Problem(type: "ref-resolve-failed", name: name, fields: [("detail", "Reference \(name) not found")]) }
        let manifest: (bytes: [UInt8], refs: [String: [UInt8]], id: [UInt8])
        do { manifest = try readDocument(Self.manifestStream(digest), contentType: manifestContentType) } catch {
            return Problem(type: "manifest-read-failed", name: name, fields: [("detail", error.description)])
        }
        let actual = digest.computed(over: manifest.bytes)
        guard actual == digest else {
            return Problem(type: "manifest-digest-mismatch", name: name, fields: [("expected", digest.description), ("actual", actual.description)])
        }
        guard case let .manifest(parsed)? = try? Documents.manifestDocument(manifest.bytes, mediaType: nil, what: "manifest") else {
            return Problem(type: "manifest-parse-failed", name: name, fields: [("detail", "not an image manifest")])
        }
        guard manifest.refs["config:\(parsed.config.digest)"] != nil else {
            return Problem(type: "config-ref-missing", name: name, fields: [("digest", parsed.config.digest.description)])
        }
        let config: (bytes: [UInt8], refs: [String: [UInt8]], id: [UInt8])
        do { config = try readDocument(Self.configStream(parsed.config.digest), contentType: configContentType) } catch {
            return Problem(type: "config-read-failed", name: name, fields: [("detail", error.description)])
        }
        let configActual = parsed.config.digest.computed(over: config.bytes)
        guard configActual == parsed.config.digest else {
            return Problem(
                type: "config-digest-mismatch", name: name,
                fields: [("expected", parsed.config.digest.description), ("actual", configActual.description)])
        }
        let imageConfig: ImageConfig
        do { imageConfig = try Documents.decode(ImageConfig.self, config.bytes, what: "config") } catch {
            return Problem(type: "config-parse-failed", name: name, fields: [("detail", error.description)])
        }
        for diffID in imageConfig.rootfs.diff_ids {
            guard let layerStream = config.refs[diffID.description] else {
                return Problem(type: "layer-ref-missing", name: name, fields: [("diffId", diffID.description)])
            }
            guard repository.streamID(Self.layerStream(diffID)) == layerStream else {
                return Problem(type: "layer-stream-missing", name: name, fields: [("diffId", diffID.description)])
            }
            do {
                let stream = try repository.openStream(Self.layerStream(diffID))
                for object in stream.references.objects {
                    let fd = try repository.openObject(object)
                    close(fd)
                }
            } catch {
                return Problem(type: "layer-object-missing", name: name, fields: [("diffId", diffID.description), ("detail", "\(error)")])
            }
        }
        if let imageID = config.refs[imageRefName] {
            do { close(try repository.openObject(imageID)) } catch {
                return Problem(type: "image-missing", name: name, fields: [("digest", Hex.encode(imageID)), ("detail", "\(error)")])
            }
        }
        return nil
    }
}

#if canImport(Glibc)
import Glibc
#endif
