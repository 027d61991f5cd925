// What the `cfsctl oci` listing commands report, as values (the command line renders them in
// composefs-rs's formats): the tagged images, a layer's entries and summary, and the OCI part
// of fsck.

import ComposeFSBase
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

    /// A stored layer's entries, each with where its content is.
    public func layerEntries(_ diffID: Digest) throws(OCIError) -> (entries: [LayerEntry], stream: SplitStream, id: ObjectID) {
        let name = Self.layerStream(diffID)
        guard let id = repository.streamID(name) else { throw .notFound("Layer \(diffID)") }
        let stream = try repositoryCall { () throws(RepositoryError) in try repository.openStream(name) }
        return (try LayerReader.entries(of: stream, layer: diffID.description), stream, id)
    }

    /// What `layer --json` shows of a stored layer.
    public func layerSummary(_ diffID: Digest) throws(OCIError) -> LayerSummary {
        let (entries, stream, id) = try layerEntries(diffID)
        var externalSize: UInt64 = 0
        for item in entries { if case .object = item.content { externalSize += item.entry.dataSize } }
        return LayerSummary(
            diffID: diffID, streamID: id, size: stream.size, entryCount: entries.count,
            externalObjects: stream.references.objects.count, externalSize: externalSize)
    }
}

public struct LayerSummary: Sendable {
    public var diffID: Digest
    /// The layer stream's object id.
    public var streamID: ObjectID
    /// Bytes of the tar.
    public var size: UInt64
    public var entryCount: Int
    public var externalObjects: Int
    /// Bytes of the tar held in objects (the rest is inline).
    public var externalSize: UInt64
}

// MARK: fsck

/// The OCI half of `oci fsck`: each tagged image's documents and layers.
public struct ImageCheckReport: Sendable {
    public struct Problem: Sendable {
        public var type: String
        public var name: String
        /// Extra fields in order (detail, expected, actual, digest, diffId).
        public var fields: [(String, String)]

    }

    public var imagesChecked = 0
    public var imagesCorrupted = 0
    public var problems: [Problem] = []

    public var ok: Bool { problems.isEmpty }
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
        let manifest: (bytes: [UInt8], refs: [String: ObjectID], id: ObjectID)
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
        let config: (bytes: [UInt8], refs: [String: ObjectID], id: ObjectID)
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
                for object in stream.references.objects { _ = try repository.openObject(object) }
            } catch {
                return Problem(type: "layer-object-missing", name: name, fields: [("diffId", diffID.description), ("detail", "\(error)")])
            }
        }
        if let imageID = config.refs[imageRefName] {
            do { _ = try repository.openObject(imageID) } catch {
                return Problem(type: "image-missing", name: name, fields: [("digest", imageID.hex), ("detail", "\(error)")])
            }
        }
        return nil
    }
}

