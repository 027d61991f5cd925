// What cfsctl prints, in composefs-rs's formats: fsck reports (text and JSON), the OCI images
// table and JSON, `oci inspect`, a layer's dumpfile lines and JSON summary.

import ComposeFSBase
import ComposeFSCLI
import ComposeFSVarlink
import Dumpfile
import EROFS
import FsVerity
import OCI
import Repository

// MARK: fsck

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

    var json: String { jsonValue.pretty() + "\n" }
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
    func json(repository: FsckReport) -> String { jsonValue(repository: repository).pretty() + "\n" }
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

    static func json(_ refs: [(name: String, digest: String)]) -> String { imageRefsDocument(refs).pretty() + "\n" }
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
        JSONValue.object([("images", .array(images.map(\.jsonValue)))]).pretty() + "\n"
    }

    /// composefs-rs's `OciInspectReply`.
    static func inspect(_ image: StoredImage, referrers: [Digest], erofs: ObjectID?, bootErofs: ObjectID?) throws -> String {
        do { return try image.inspectDocument(referrers: referrers, erofs: erofs, bootErofs: bootErofs).pretty() + "\n" } catch {
            throw ToolError(error.description)
        }
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
