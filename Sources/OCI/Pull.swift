// Pulling an image into the repository as composefs-rs 0.9 does: manifest (through an index,
// for this platform), then the config and the layers not stored yet (unless the config stream
// is stored: its layers are then taken as they are), fetched and imported in parallel, each
// checked against its blob digest, size and diff_id; the config stream and the manifest
// stream; then the composefs images of the merged layers, recorded by rewriting both streams,
// and the tag. Streams are named only once complete, and the tag comes last: a failed pull
// leaves no tag, and what it stored is garbage for `gc`.

import ComposeFS
import Dispatch
import FsVerity
import Repository
import Synchronization

public struct PullOptions: Sendable {
    public var platform: Platform
    public var registry: RegistryOptions
    /// Layers fetched and imported at once.
    public var parallelLayers: Int

    public init(platform: Platform = .current, registry: RegistryOptions, parallelLayers: Int) {
        self.platform = platform
        self.registry = registry
        self.parallelLayers = parallelLayers
    }
}

/// What `pull` reports while it works: composefs-rs 0.9's progress events (its ProgressEvent,
/// in its words, per layer by diff_id), and when the composefs images are built.
public enum PullEvent: Sendable {
    /// A status line.
    case message(String)
    /// A layer that is stored already.
    case layerSkipped(Digest)
    /// A layer's blob starts being read; `total` is its size.
    case layerStarted(Digest, total: UInt64)
    /// Bytes of the layer's blob read so far.
    case layerProgress(Digest, fetched: UInt64, total: UInt64)
    /// The layer is stored; `transferred` is its blob's size.
    case layerDone(Digest, transferred: UInt64)
    /// The composefs images are being built (composefs-rs reports nothing then).
    case buildingImage
}

public struct PullResult: Sendable {
    public var manifestDigest: Digest
    public var configDigest: Digest
    /// The manifest stream as stored before the images were recorded (composefs-rs prints
    /// that one): the first one written, or the one found stored.
    public var manifestStream: ObjectID
    public var statistics: ImportStatistics
}

extension ImageStore {
    /// Pulls `reference` and tags it `tag` (nil: no tag).
    public func pull(
        _ reference: String, tag: String?, options: PullOptions, events: (@Sendable (PullEvent) -> Void)? = nil
    ) async throws(OCIError) -> PullResult {
        let source = try ImageReference.source(reference, options: options.registry)
        let (manifestDigest, manifestBytes, manifest) = try await resolveManifest(source, reference: reference, platform: options.platform)
        let configDigest = manifest.config.digest
        // composefs-rs reads layout directories itself and words their progress its own way.
        let layoutDirectory = source.isLayoutDirectory
        if layoutDirectory { events?(.message("Importing \(manifest.layers.count) layers from OCI layout")) }

        var layerStreams: [(diffID: Digest, stream: ObjectID)] = []
        var statistics = ImportStatistics()
        let configStream: ObjectID
        if repository.streamID(Self.configStream(configDigest)) != nil {
            // Stored before: its layers are the ones it names.
            if !layoutDirectory { events?(.message("Already have container config \(configDigest)")) }
            let (document, config) = try readConfig(configDigest, stream: nil)
            try checkLayerCount(config, manifest)
            layerStreams = try config.layerStreams(in: document.refs, config: configDigest)
            if layoutDirectory { for layer in layerStreams { events?(.layerSkipped(layer.diffID)) } }
            configStream = document.id
        } else {
            let configDescriptor = manifest.config
            guard configDescriptor.size >= 0, configDescriptor.size <= Int64(DocumentLimits.configMax) else {
                throw .badDocument(what: "config \(configDigest)", reason: "size \(configDescriptor.size) out of range")
            }
            if !layoutDirectory { events?(.message("Fetching config \(configDigest)")) }
            let configBytes = try await source.blob(configDescriptor, progress: nil).bytes(limit: DocumentLimits.configMax)
            try verify(configBytes, against: configDescriptor, what: "config")
            let config = try Documents.decode(ImageConfig.self, configBytes, what: "config \(configDigest)")
            try checkLayerCount(config, manifest)
            var missing: [(descriptor: Descriptor, diffID: Digest)] = []
            var queued = Set<Digest>()
            for (descriptor, diffID) in zip(manifest.layers, config.rootfs.diff_ids) {
                guard descriptor.size >= 0 else { throw .badDocument(what: "layer \(descriptor.digest)", reason: "negative size") }
                if repository.streamID(Self.layerStream(diffID)) != nil || queued.contains(diffID) {
                    events?(.layerSkipped(diffID))
                } else {
                    queued.insert(diffID)
                    missing.append((descriptor, diffID))
                }
            }
            // The largest first, as composefs-rs: the long downloads start early.
            missing.sort { $0.descriptor.size > $1.descriptor.size }
            statistics = try await fetchLayers(missing, from: source, options: options, events: events)
            for diffID in config.rootfs.diff_ids {
                guard let id = repository.streamID(Self.layerStream(diffID)) else { throw .notFound("layer stream \(diffID)") }
                layerStreams.append((diffID, id))
            }
            configStream = try storeConfig(configBytes, digest: configDigest, layers: layerStreams)
        }

        let manifestStream: ObjectID
        if let stored = repository.streamID(Self.manifestStream(manifestDigest)) {
            events?(.message(layoutDirectory ? "Storing manifest" : "Already have manifest \(manifestDigest)"))
            manifestStream = stored
        } else {
            events?(.message(layoutDirectory ? "Storing manifest" : "Storing manifest \(manifestDigest)"))
            manifestStream = try storeManifest(
                manifestBytes, digest: manifestDigest, config: (configDigest, configStream), layers: layerStreams)
        }

        events?(.buildingImage)
        try await offload { () throws(OCIError) in try self.makeImages(manifest: manifestDigest, tag: tag) }
        return PullResult(manifestDigest: manifestDigest, configDigest: configDigest, manifestStream: manifestStream, statistics: statistics)
    }

    /// An image config names one diff_id per manifest layer.
    private func checkLayerCount(_ config: ImageConfig, _ manifest: Manifest) throws(OCIError) {
        guard config.rootfs.diff_ids.count == manifest.layers.count else {
            throw .badDocument(
                what: "config \(manifest.config.digest)",
                reason: "lists \(config.rootfs.diff_ids.count) diff_ids for \(manifest.layers.count) layers")
        }
    }

    /// The image manifest the reference names, through an index when there is one.
    private func resolveManifest(
        _ source: any ImageSource, reference: String, platform: Platform
    ) async throws(OCIError) -> (Digest, [UInt8], Manifest) {
        let root = try await source.rootDocument()
        let rootDigest = root.pinned ?? Digest.sha256(root.bytes)
        if let pinned = root.pinned, !pinned.matches(root.bytes) {
            throw .digestMismatch(what: "manifest of \(reference)", expected: pinned.description, actual: pinned.computed(over: root.bytes).description)
        }
        switch try Documents.manifestDocument(root.bytes, mediaType: root.mediaType, what: "manifest of \(reference)") {
        case let .manifest(manifest):
            return (rootDigest, root.bytes, manifest)
        case let .index(index):
            let candidates = index.manifests.filter { descriptor in
                descriptor.platform.map { platform.accepts($0) } ?? false
            }
            // An exact variant match beats an entry that names none.
            guard let chosen = candidates.first(where: { $0.platform?.variant == platform.variant }) ?? candidates.first else {
                let available = index.manifests.compactMap { $0.platform }.map { "\($0.os)/\($0.architecture)" + ($0.variant.map { "/" + $0 } ?? "") }
                throw .notFound(
                    "an image for \(platform.os)/\(platform.architecture) in \(reference) (available: \(available.joined(separator: ", ")))")
            }
            let bytes = try await source.manifest(chosen)
            try verify(bytes, against: chosen, what: "manifest")
            guard case let .manifest(manifest) = try Documents.manifestDocument(bytes, mediaType: chosen.mediaType, what: "manifest \(chosen.digest)") else {
                throw .unsupported("manifest \(chosen.digest): nested image indexes are not supported")
            }
            return (chosen.digest, bytes, manifest)
        }
    }

    private func verify(_ bytes: [UInt8], against descriptor: Descriptor, what: String) throws(OCIError) {
        guard Int64(bytes.count) == descriptor.size else {
            throw .badDocument(what: "\(what) \(descriptor.digest)", reason: "is \(bytes.count) bytes, the descriptor says \(descriptor.size)")
        }
        let actual = descriptor.digest.computed(over: bytes)
        guard actual == descriptor.digest else {
            throw .digestMismatch(what: what, expected: descriptor.digest.description, actual: actual.description)
        }
    }

    /// Fetches and imports layers, several at once.
    private func fetchLayers(
        _ layers: [(descriptor: Descriptor, diffID: Digest)], from source: any ImageSource, options: PullOptions,
        events: (@Sendable (PullEvent) -> Void)?
    ) async throws(OCIError) -> ImportStatistics {
        let result: Result<ImportStatistics, OCIError> = await withTaskGroup(of: Result<ImportStatistics, OCIError>.self) { group in
            var statistics = ImportStatistics()
            var failure: OCIError?
            var next = 0
            func startNext() {
                guard next < layers.count else { return }
                let layer = layers[next]
                next += 1
                group.addTask {
                    do throws(OCIError) {
                        return .success(try await self.fetchLayer(layer.descriptor, diffID: layer.diffID, from: source, events: events))
                    } catch {
                        return .failure(error)
                    }
                }
            }
            for _ in 0..<max(1, options.parallelLayers) { startNext() }
            for await outcome in group {
                switch outcome {
                case let .success(layerStatistics):
                    statistics.add(layerStatistics)
                    if failure == nil { startNext() }
                case let .failure(error):
                    if failure == nil { failure = error }
                    group.cancelAll()
                }
            }
            if let failure { return .failure(failure) }
            return .success(statistics)
        }
        return try result.get()
    }

    private func fetchLayer(
        _ descriptor: Descriptor, diffID: Digest, from source: any ImageSource, events: (@Sendable (PullEvent) -> Void)?
    ) async throws(OCIError) -> ImportStatistics {
        // Progress counts the blob's bytes (compressed, as stored), as composefs-rs does.
        let total = UInt64(descriptor.size)
        let fetched = Atomic<UInt64>(0)
        let report: (@Sendable (UInt64) -> Void)? = events.map { events in
            { @Sendable count in events(.layerProgress(diffID, fetched: fetched.add(count, ordering: .relaxed).newValue, total: total)) }
        }
        events?(.layerStarted(diffID, total: total))
        let blob = try await source.blob(descriptor, progress: report)
        let downloaded = source.stagesBlobs
        let repository = self.repository
        let imported = try await offload { () throws(OCIError) -> LayerImportResult in
            // Local blobs report progress as the import reads them.
            if !downloaded, let report {
                return try LayerImporter.importLayer(
                    from: ProgressSource(inner: blob.source(), report: report), into: repository, layer: diffID.description)
            }
            return try LayerImporter.importLayer(from: blob.source(), into: repository, layer: diffID.description)
        }
        if source.verifiesBlobDigests {
            guard descriptor.digest.algorithm == "sha256" else {
                throw .unsupported("layer \(descriptor.digest): only sha256 layer digests are supported")
            }
            guard imported.blobDigest == descriptor.digest else {
                throw .digestMismatch(what: "layer blob", expected: descriptor.digest.description, actual: imported.blobDigest.description)
            }
            guard imported.blobSize == UInt64(descriptor.size) else {
                throw .badDocument(what: "layer \(descriptor.digest)", reason: "is \(imported.blobSize) bytes, the descriptor says \(descriptor.size)")
            }
        }
        guard imported.diffID == diffID else {
            throw .digestMismatch(what: "layer \(descriptor.digest) (uncompressed, diff_id)", expected: diffID.description, actual: imported.diffID.description)
        }
        _ = try storeLayer(imported.stream, diffID: diffID)
        events?(.layerDone(diffID, transferred: total))
        return imported.statistics
    }
}

/// Runs blocking work on a Dispatch thread, so the cooperative pool stays free for network I/O.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws(OCIError) -> T) async throws(OCIError) -> T {
    let result: Result<T, OCIError> = await withCheckedContinuation { continuation in
        DispatchQueue.global().async {
            continuation.resume(returning: Result { () throws(OCIError) -> T in try body() })
        }
    }
    return try result.get()
}

#if canImport(Glibc)
import Glibc
#endif
