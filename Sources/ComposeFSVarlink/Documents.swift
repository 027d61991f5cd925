// composefs-rs 0.9's JSON documents: the replies of its varlink service, which `cfsctl fsck
// --json`, `cfsctl oci images --json`, `oci fsck --json` and `oci inspect` print as well.

import ComposeFSBase
import ComposeFSCLI
import FsVerity
import OCI
import Repository

extension FsckError {
    /// "fsck: TYPE: PATH: details", as composefs-rs's FsckError displays.
    public var line: String {
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
    /// `FsckReply`: counts in snake_case, errors as their lines (and what a repair removed).
    public var jsonValue: JSONValue {
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
}

/// `ListImageRefsReply`: the refs under images/refs/ and the image each names.
public func imageRefsDocument(_ refs: [(name: String, digest: String)]) -> JSONValue {
    .object([("images", .array(refs.map { .object([("name", .string($0.name)), ("digest", .string($0.digest))]) }))])
}

extension ImageCheckReport.Problem {
    /// "fsck: TYPE: TAG: details", as composefs-rs's OciFsckError displays.
    public var line: String {
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
    /// `OciFsckReply`, the repository's report under "repo".
    public func jsonValue(repository: FsckReport) -> JSONValue {
        .object([
            ("ok", .bool(ok && repository.ok)),
            ("images_checked", .integer(Int64(imagesChecked))), ("images_corrupted", .integer(Int64(imagesCorrupted))),
            ("errors", .array(problems.map { .string($0.line) })),
            ("repo", repository.jsonValue),
        ])
    }
}

extension ImageSummary {
    /// An `ImageEntry` of `ListImagesReply`.
    public var jsonValue: JSONValue {
        .object([
            ("name", .string(name)), ("manifest_digest", .string(manifestDigest.description)),
            ("is_container", .bool(isContainer)), ("architecture", .string(architecture)),
            ("os", .string(os)), ("created", created.map { .string($0) } ?? .null),
            ("layer_count", .integer(Int64(layerCount))), ("referrer_count", .integer(Int64(referrerCount))),
        ])
    }
}

public enum InspectDocumentError: Error, CustomStringConvertible {
    case notUTF8(what: String)

    public var description: String {
        switch self {
        case let .notUTF8(what): "\(what) is not valid UTF-8"
        }
    }
}

extension StoredImage {
    /// `OciInspectReply`: the manifest and config as the strings stored, the referrers'
    /// digests, and the composefs images in the default format (or null).
    public func inspectDocument(referrers: [Digest], erofs: ObjectID?, bootErofs: ObjectID?) throws(InspectDocumentError) -> JSONValue {
        func text(_ bytes: [UInt8], _ what: String) throws(InspectDocumentError) -> String {
            guard let text = String(validating: bytes, as: UTF8.self) else { throw .notUTF8(what: what) }
            return text
        }
        return .object([
            ("manifest", .string(try text(manifestBytes, "manifest"))),
            ("config", .string(try text(configBytes, "config"))),
            ("referrers", .array(referrers.map { .string($0.description) })),
            ("composefs_erofs", erofs.map { .string($0.hex) } ?? .null),
            ("composefs_boot_erofs", bootErofs.map { .string($0.hex) } ?? .null),
        ])
    }
}

extension ImportStatistics {
    /// composefs-rs's `ImportStats` display (objects are copied here, never reflinked).
    public var summary: String {
        "\(objectsWritten) new + \(objectsPresent) already present objects; \(humanBytes(bytesWritten)) stored, \(humanBytes(bytesInline)) inlined"
    }
}
