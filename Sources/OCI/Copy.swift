// Copying an image from another repository (`cfsctl oci copy`) exactly as composefs-rs 0.9
// does it over its varlink API, in one process here: every layer this repository lacks is
// received as the source would send it (GetLayer → PutLayer), so the two may use different
// fs-verity algorithms; then the image is finalized (FinalizeImage): its config and manifest
// streams written unless stored, its composefs images made unless recorded, and the tag set.

import ComposeFSBase
import FsVerity
import Repository

/// What a finalized (or copied) image is stored as.
public struct FinalizedImage: Sendable {
    public var manifestDigest: Digest
    /// The manifest and config streams as they are after the images were recorded.
    public var manifestStream: ObjectID
    public var configDigest: Digest
    public var configStream: ObjectID
}

extension ImageStore {
    /// With `zeroCopy` every object is reflinked or hard-linked from the source, never copied
    /// (both repositories on one file system).
    public func copy(_ reference: OCIReference, from source: ImageStore, name: String?, zeroCopy: Bool = false) throws(OCIError) -> FinalizedImage {
        let image = try source.open(reference)
        var layers: [(diffID: Digest, stream: ObjectID)] = []
        for diffID in image.config.rootfs.diff_ids {
            if let stored = repository.streamID(Self.layerStream(diffID)) {
                layers.append((diffID, stored))
                continue
            }
            guard let sourceStream = source.repository.streamID(Self.layerStream(diffID)) else {
                throw .notFound("layer \(diffID) in \(source.repository.path)")
            }
            var chunks = SplitdirfdChunkList(try source.transferChunks(ofLayerStream: sourceStream, objectsIndex: 0))
            let objects = try repositoryCall { () throws(RepositoryError) in try source.repository.openObjectsDirectory() }
            do {
                layers.append((diffID, try receiveLayer(diffID, from: &chunks, directories: [objects], zeroCopy: zeroCopy).stream))
            } catch let .failed(error) {
                throw error
            } catch {
                throw .transfer(what: "layer \(diffID) from \(source.repository.path)", reason: error.description)
            }
        }
        return try finalizeImage(manifest: image.manifestBytes, config: image.configBytes, layers: layers, name: name)
    }

    /// Records an image whose layers are stored, from its manifest and config as they are
    /// (their digests are those of these bytes) and its layers' streams by diff_id, in the
    /// order given (composefs-rs 0.9's FinalizeImage). Idempotent: streams already stored and
    /// images already recorded are kept; `name` tags it.
    ///
    /// What composefs-rs finds wrong only while building the image, after writing the streams,
    /// is refused here before anything is written: a manifest that does not name this config,
    /// a config whose diff_ids are not all given, a layer stream that is not the one stored
    /// for its diff_id.
    public func finalizeImage(
        manifest manifestBytes: [UInt8], config configBytes: [UInt8], layers: [(diffID: Digest, stream: ObjectID)], name: String?
    ) throws(OCIError) -> FinalizedImage {
        let manifestDigest = Digest.sha256(manifestBytes)
        let configDigest = Digest.sha256(configBytes)
        guard case let .manifest(manifest) = try Documents.manifestDocument(manifestBytes, mediaType: nil, what: "manifest \(manifestDigest)") else {
            throw .badDocument(what: "manifest \(manifestDigest)", reason: "is an index, not an image manifest")
        }
        guard manifest.config.digest == configDigest else {
            throw .digestMismatch(what: "config of manifest \(manifestDigest)", expected: manifest.config.digest.description, actual: configDigest.description)
        }
        let config = try Documents.decode(ImageConfig.self, configBytes, what: "config \(configDigest)")
        guard config.rootfs.diff_ids.count == manifest.layers.count else {
            throw .badDocument(
                what: "config \(configDigest)", reason: "lists \(config.rootfs.diff_ids.count) diff_ids for \(manifest.layers.count) layers")
        }
        for layer in layers {
            let stored = repository.streamID(Self.layerStream(layer.diffID))
            guard stored == layer.stream else {
                throw .badDocument(
                    what: "layer \(layer.diffID)",
                    reason: "\(layer.stream.hex) is not its stored stream (\(stored.map(\.hex) ?? "none is stored"))")
            }
        }
        for diffID in config.rootfs.diff_ids where !layers.contains(where: { $0.diffID == diffID }) {
            throw .notFound("layer \(diffID) of config \(configDigest) among the layers given")
        }

        let configStream: ObjectID
        if let stored = repository.streamID(Self.configStream(configDigest)) {
            configStream = stored
        } else {
            configStream = try storeConfig(configBytes, digest: configDigest, layers: layers)
        }
        if repository.streamID(Self.manifestStream(manifestDigest)) == nil {
            _ = try storeManifest(manifestBytes, digest: manifestDigest, config: (configDigest, configStream), layers: layers)
        }
        if try open(manifest: manifestDigest).imageID(defaultFormat.stored) == nil {
            try makeImages(manifest: manifestDigest, tag: name)
        } else if let name {
            try tag(manifestDigest, as: name)
        }
        // Making the images rewrote both streams.
        guard let manifestStream = repository.streamID(Self.manifestStream(manifestDigest)),
            let finalConfig = repository.streamID(Self.configStream(configDigest))
        else { throw .notFound("the streams of \(manifestDigest) after finalizing") }
        return FinalizedImage(manifestDigest: manifestDigest, manifestStream: manifestStream, configDigest: configDigest, configStream: finalConfig)
    }
}
