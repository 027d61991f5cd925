// What the `cfsctl oci` listing commands report, as values (the command line renders them in
// composefs-rs's formats): the tagged images, a layer's entries and summary, and the OCI part
// of fsck.

import ComposeFSBase
import FsVerity
import Repository

#if canImport(Glibc)
import Glibc
#endif

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
                name: tag.name, manifestDigest: tag.manifest, isContainer: MediaType.imageConfigs.contains(image.manifest.config.mediaType),
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

/// The OCI half of `oci fsck`: each tagged image's documents and layers, as composefs-rs 0.9
/// checks them.
public struct ImageCheckReport: Sendable {
    public enum Kind: Sendable {
        case manifestReadFailed(detail: String)
        case manifestDigestMismatch(expected: Digest, actual: Digest)
        case manifestParseFailed(detail: String)
        case configRefMissing(config: Digest)
        case configReadFailed(detail: String)
        case configDigestMismatch(expected: Digest, actual: Digest)
        case configParseFailed(detail: String)
        case layerRefMissing(diffID: Digest)
        case layerStreamMissing(diffID: Digest)
        case layerObjectMissing(diffID: Digest, detail: String)
        /// The config's `containers.composefs.fsverity` label names an image that does not open.
        case sealImageMissing(image: String, detail: String)
        case artifactLayerRefMissing(layer: Digest)
        case artifactLayerObjectMissing(layer: Digest, detail: String)
        case refResolveFailed(detail: String)
        /// A tag starting with '@' (reserved for digests).
        case invalidRefName
    }

    public struct Problem: Sendable {
        /// The tag.
        public var name: String
        public var kind: Kind
    }

    public var imagesChecked = 0
    public var imagesCorrupted = 0
    public var problems: [Problem] = []

    public var ok: Bool { problems.isEmpty }
}

extension ImageStore {
    /// Checks every tagged image (or the one named). A problem with the manifest or the config
    /// ends an image's check; each layer is checked. An image counts as corrupted once.
    public func checkImages(only name: String? = nil) throws(OCIError) -> ImageCheckReport {
        var report = ImageCheckReport()
        var targets: [(name: String, manifest: Digest)] = []
        if let name {
            do { targets = [(name, try resolve(tag: name))] } catch {
                report.imagesChecked = 1
                report.imagesCorrupted = 1
                report.problems = [.init(name: name, kind: .refResolveFailed(detail: error.description))]
                return report
            }
        } else {
            targets = try tags()
        }
        for target in targets {
            report.imagesChecked += 1
            let problems =
                target.name.hasPrefix("@") ? [.invalidRefName] : check(target.manifest)
            if !problems.isEmpty { report.imagesCorrupted += 1 }
            report.problems += problems.map { .init(name: target.name, kind: $0) }
        }
        return report
    }

    private func check(_ digest: Digest) -> [ImageCheckReport.Kind] {
        let manifest: Document
        do { manifest = try readDocument(Self.manifestStream(digest), contentType: manifestContentType) } catch {
            return [.manifestReadFailed(detail: error.description)]
        }
        let actual = digest.computed(over: manifest.bytes)
        guard actual == digest else { return [.manifestDigestMismatch(expected: digest, actual: actual)] }
        let parsed: Manifest
        do {
            guard case let .manifest(document) = try Documents.manifestDocument(manifest.bytes, mediaType: nil, what: "manifest") else {
                return [.manifestParseFailed(detail: "an image index, not an image manifest")]
            }
            parsed = document
        } catch {
            return [.manifestParseFailed(detail: error.description)]
        }
        let configDigest = parsed.config.digest
        guard let configStream = manifest.refs["config:\(configDigest)"] else { return [.configRefMissing(config: configDigest)] }
        let config: Document
        do { config = try readDocument(configStream, contentType: configContentType, what: "config stream \(configStream.hex)") } catch {
            return [.configReadFailed(detail: error.description)]
        }
        let configActual = configDigest.computed(over: config.bytes)
        guard configActual == configDigest else { return [.configDigestMismatch(expected: configDigest, actual: configActual)] }
        guard MediaType.imageConfigs.contains(parsed.config.mediaType) else {
            // An artifact: its layers are the manifest's named refs.
            return parsed.layers.compactMap { layer in
                guard let object = manifest.refs[layer.digest.description] else { return .artifactLayerRefMissing(layer: layer.digest) }
                do throws(RepositoryError) { _ = try repository.openObject(object) } catch {
                    return .artifactLayerObjectMissing(layer: layer.digest, detail: error.description)
                }
                return nil
            }
        }
        let imageConfig: ImageConfig
        do { imageConfig = try Documents.decode(ImageConfig.self, config.bytes, what: "config") } catch {
            return [.configParseFailed(detail: error.description)]
        }
        var problems: [ImageCheckReport.Kind] = []
        for diffID in imageConfig.rootfs.diff_ids {
            guard let layerStream = config.refs[diffID.description] else {
                problems.append(.layerRefMissing(diffID: diffID))
                continue
            }
            if !hasStreamLink(Self.layerStream(diffID)) { problems.append(.layerStreamMissing(diffID: diffID)) }
            do { _ = try repository.openObject(layerStream) } catch {
                problems.append(.layerObjectMissing(diffID: diffID, detail: error.description))
            }
        }
        if let seal = imageConfig.config?.labels?["containers.composefs.fsverity"] {
            do { _ = try repository.openImage(seal) } catch {
                problems.append(.sealImageMissing(image: seal, detail: error.description))
            }
        }
        return problems
    }

    /// Whether streams/NAME is there as a link, wherever it points (composefs-rs's
    /// `has_stream` looks no further; a missing object is reported as such).
    private func hasStreamLink(_ name: String) -> Bool {
        var info = stat()
        return lstat(repository.path + "/streams/" + name, &info) == 0
    }
}
