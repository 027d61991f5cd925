// What cfsctl prints, in composefs-rs's formats: fsck reports (text and JSON), the OCI images
// table and JSON, `oci inspect`, a layer's dumpfile lines and JSON summary.

import ComposeFSBase
import ComposeFSCLI
import Dumpfile
import EROFS
import FsVerity
import OCI
import Repository

// MARK: fsck

extension FsckError {
    /// "fsck: TYPE: PATH: details".
    var line: String {
        let details: String
        switch type {
        case "object-digest-mismatch": details = "measured \(value("measured"))"
        case "missing-object-ref", "image-missing-object": details = value("objectId")
        case "missing-named-ref": details = "ref \(value("refName")): \(value("objectId"))"
        case "metadata-algorithm-mismatch": details = "expected \(value("expected")), repository opened as \(value("actual"))"
        default: details = fields.map(\.1).joined(separator: ": ")
        }
        return "fsck: \(type): \(path)" + (details.isEmpty ? "" : ": \(details)")
    }
}

extension FsckReport {
    /// The text report; the command exits non-zero when `ok` is false.
    var text: String {
        let metadataError = errors.contains { $0.type.hasPrefix("metadata-") }
        var lines = [
            "meta.json: \(metadataError ? "error" : hasMetadata ? "ok" : "absent")",
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

    /// composefs-rs's `fsck --json` document: counts in snake_case, errors as their lines.
    var jsonValue: JSONValue {
        var members: [(String, JSONValue)] = [
            ("ok", .bool(ok)), ("has_metadata", .bool(hasMetadata)),
            ("objects_checked", .integer(Int64(objectsChecked))), ("objects_corrupted", .integer(Int64(objectsCorrupted))),
            ("streams_checked", .integer(Int64(streamsChecked))), ("streams_corrupted", .integer(Int64(streamsCorrupted))),
            ("images_checked", .integer(Int64(imagesChecked))), ("images_corrupted", .integer(Int64(imagesCorrupted))),
            ("broken_links", .integer(Int64(brokenLinks))), ("missing_objects", .integer(Int64(missingObjects))),
            ("errors", .array(errors.map { .string($0.line) })),
        ]
        if !repaired.isEmpty { members.append(("repaired", .array(repaired.map { .string($0) }))) }
        return .object(members)
    }

    var json: String { jsonValue.pretty() + "\n" }
}

extension ImageCheckReport.Problem {
    /// "fsck: TYPE: TAG: details", as composefs-rs's OciFsckError displays.
    var line: String {
        let (type, details): (String, String) =
            switch kind {
            case let .manifestReadFailed(detail): ("manifest-read-failed", detail)
            case let .manifestDigestMismatch(expected, actual): ("manifest-digest-mismatch", "expected \(expected), got \(actual)")
            case let .manifestParseFailed(detail): ("manifest-parse-failed", detail)
            case let .configRefMissing(config): ("config-ref-missing", config.description)
            case let .configReadFailed(detail): ("config-read-failed", detail)
            case let .configDigestMismatch(expected, actual): ("config-digest-mismatch", "expected \(expected), got \(actual)")
            case let .configParseFailed(detail): ("config-parse-failed", detail)
            case let .layerRefMissing(diffID): ("layer-ref-missing", diffID.description)
            case let .layerStreamMissing(diffID): ("layer-stream-missing", diffID.description)
            case let .layerObjectMissing(diffID, detail): ("layer-object-missing", "\(diffID): \(detail)")
            case let .sealImageMissing(image, detail): ("seal-image-missing", "\(image): \(detail)")
            case let .artifactLayerRefMissing(layer): ("artifact-layer-ref-missing", layer.description)
            case let .artifactLayerObjectMissing(layer, detail): ("artifact-layer-object-missing", "\(layer): \(detail)")
            case let .refResolveFailed(detail): ("ref-resolve-failed", detail)
            case .invalidRefName: ("invalid-ref-name", "leading '@' is reserved for digest references")
            }
        return "fsck: \(type): \(name): \(details)"
    }
}

extension ImageCheckReport {
    var text: String {
        var text = "oci images: \(imagesChecked - imagesCorrupted)/\(imagesChecked) ok\n"
        if !problems.isEmpty {
            text += "oci errors: \(problems.count)\n" + problems.map { "  - \($0.line)\n" }.joined()
        }
        return text
    }

    /// composefs-rs's `oci fsck --json` document, the repository's report under "repo".
    func json(repository: FsckReport) -> String {
        JSONValue.object([
            ("ok", .bool(ok && repository.ok)),
            ("images_checked", .integer(Int64(imagesChecked))), ("images_corrupted", .integer(Int64(imagesCorrupted))),
            ("errors", .array(problems.map { .string($0.line) })),
            ("repo", repository.jsonValue),
        ]).pretty() + "\n"
    }
}

// MARK: OCI images

/// Tables as composefs-rs draws them (comfy-table's UTF8_FULL preset, cells left-aligned).
enum Table {
    static func render(header: [String], rows: [[String]]) -> String {
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
}

/// `cfsctl images`: the refs under images/refs/.
enum ImageRefListing {
    static func table(_ refs: [(name: String, digest: String)], truncate: Bool) -> String {
        guard !refs.isEmpty else { return "No images found\n" }
        return Table.render(header: ["NAME", "DIGEST"], rows: refs.map { [$0.name, truncate ? String($0.digest.prefix(12)) : $0.digest] })
    }

    static func json(_ refs: [(name: String, digest: String)]) -> String {
        JSONValue.object([
            ("images", .array(refs.map { .object([("name", .string($0.name)), ("digest", .string($0.digest))]) }))
        ]).pretty() + "\n"
    }
}

enum ImageListing {
    static func table(_ images: [ImageSummary]) -> String {
        guard !images.isEmpty else { return "No images found\n" }
        let rows = images.map { image in
            [image.name, String(image.manifestDigest.hex.prefix(12)), image.architecture.isEmpty ? "artifact" : image.architecture,
             String(image.layerCount), String(image.referrerCount)]
        }
        return Table.render(header: ["NAME", "DIGEST", "ARCH", "LAYERS", "REFS"], rows: rows)
    }

    /// composefs-rs's `ListImagesReply`.
    static func json(_ images: [ImageSummary]) -> String {
        let entries = images.map { image in
            JSONValue.object([
                ("name", .string(image.name)), ("manifest_digest", .string(image.manifestDigest.description)),
                ("is_container", .bool(image.isContainer)), ("architecture", .string(image.architecture)),
                ("os", .string(image.os)), ("created", image.created.map { .string($0) } ?? .null),
                ("layer_count", .integer(Int64(image.layerCount))), ("referrer_count", .integer(Int64(image.referrerCount))),
            ])
        }
        return JSONValue.object([("images", .array(entries))]).pretty() + "\n"
    }

    /// composefs-rs's `OciInspectReply`: the manifest and config as the strings stored, the
    /// referrers' digests, and the composefs images in the default format (or null).
    static func inspect(_ image: StoredImage, referrers: [Digest], erofs: ObjectID?, bootErofs: ObjectID?) throws -> String {
        func text(_ bytes: [UInt8], _ what: String) throws -> String {
            guard let text = String(validating: bytes, as: UTF8.self) else { throw ToolError("\(what) is not valid UTF-8") }
            return text
        }
        return JSONValue.object([
            ("manifest", .string(try text(image.manifestBytes, "manifest"))),
            ("config", .string(try text(image.configBytes, "config"))),
            ("referrers", .array(referrers.map { .string($0.description) })),
            ("composefs_erofs", erofs.map { .string($0.hex) } ?? .null),
            ("composefs_boot_erofs", bootErofs.map { .string($0.hex) } ?? .null),
        ]).pretty() + "\n"
    }
}

// MARK: Layers

enum LayerListing {
    /// One composefs-dump(5) line per tar entry, in archive order.
    static func dumpfile(_ entries: [LayerEntry]) -> String {
        var out: [UInt8] = []
        func field(_ bytes: [UInt8]?) {
            out.append(0x20)
            Escaping.escapeOptional(bytes, style: .loneDash, into: &out)
        }
        for item in entries {
            let entry = item.entry
            Escaping.escape(TarEntry.absolutePath(entry.path), into: &out)
            if entry.kind == .hardlink {
                out += Array(" 0 @120000 - - - - 0.0".utf8)
                field(TarEntry.absolutePath(entry.linkTarget))
                out += Array(" - -\n".utf8)
                continue
            }
            let size = entry.kind == .symlink ? UInt64(entry.linkTarget.count) : entry.size
            out += Array(" \(size) \(String(entry.mode, radix: 8)) 1 \(entry.uid) \(entry.gid) \(entry.deviceNumber) \(entry.mtime.seconds).\(entry.mtime.nanoseconds)".utf8)
            var payload: [UInt8]?
            var content: [UInt8]?
            var digest: [UInt8]?
            switch (entry.kind, item.content) {
            case (.symlink, _): payload = entry.linkTarget
            case let (.regular, .inline(bytes)): content = bytes
            case let (.regular, .object(id)):
                payload = Array(id.objectPath.utf8)
                digest = Array(id.hex.utf8)
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
    static func json(_ summary: LayerSummary) -> String {
        JSONValue.object([
            ("diffId", .string(summary.diffID.description)), ("verity", .string(summary.streamID.hex)),
            ("size", .integer(Int64(summary.size))), ("entryCount", .integer(Int64(summary.entryCount))),
            ("splitstream", .object([
                ("externalObjects", .integer(Int64(summary.externalObjects))),
                ("externalSize", .integer(Int64(summary.externalSize))),
                ("inlineSize", .integer(Int64(summary.size) - Int64(summary.externalSize))),
            ])),
        ]).pretty() + "\n"
    }
}
