// org.composefs.Oci's layer transport between services (feature splitdirfdstream-v0), as
// composefs-rs 0.9 serves it. GetLayer hands a stored layer over as descriptors: a pipe the
// layer's splitdirfdstream is written to by a thread of its own, the objects/ directory its
// FileBackedData chunks name files below (among placeholders), and descriptors the client
// holds until it is done. PutLayer takes such a pipe and directories and stores the layer,
// refusing it unless its tar hashes to the diff_id. FinalizeImage records the image once its
// layers are stored. A copy between two services is HasLayer, GetLayer from the source,
// PutLayer to the destination for each missing layer, then FinalizeImage.

import ComposeFSBase
import FsVerity
import OCI
import Repository
import Varlink

#if canImport(Glibc)
import Glibc
#endif

extension CfsctlVarlinkService {
    static let layerTransportFeature = "splitdirfdstream-v0"

    func invalidRequest(_ message: String) -> VarlinkError {
        ComposefsInterface.oci.error("InvalidRequest", [("message", .string(message))])
    }

    func invalidDigest(_ message: String) -> VarlinkError {
        ComposefsInterface.oci.error("InvalidDigest", [("message", .string(message))])
    }

    /// The layer as descriptors, in one reply, or (with `more`) spread over several, each
    /// with `dir_count`.
    func getLayer(_ parameters: VarlinkParameters, more: Bool, stream: any VarlinkReplyStream) throws(VarlinkError) -> VarlinkOutcome {
        _ = try parameters.unsigned("handle")
        let layer = try parameters.object("params")
        // `storage` and `consumer_has_cap_dac_override` concern containers-storage services.
        guard let diffIDText = try layer.optionalString("diff_id") else {
            throw invalidRequest("GetLayer: diff_id is required for the repo service")
        }
        let diffID: Digest
        do { diffID = try Digest(parsing: diffIDText) } catch { throw invalidDigest(error.description) }
        let store = try imageStore(parameters)
        let name = ImageStore.layerStream(diffID)
        guard let layerStream = store.repository.streamID(name) else {
            throw ComposefsInterface.oci.error("NoSuchLayer", [("diff_id", .string(diffIDText))])
        }
        let handover: LayerHandover
        let chunks: [SplitdirfdChunk]
        do {
            handover = try LayerHandover(objects: try store.repository.openObjectsDirectory(), seed: LayerHandover.seed(name))
            chunks = try store.transferChunks(ofLayerStream: layerStream, objectsIndex: handover.objectsIndex)
        } catch {
            throw ComposefsInterface.oci.internalError("\(error)")
        }
        guard let frames = handover.frames(more: more) else {
            throw ComposefsInterface.oci.error(
                "FdLimitExceeded",
                [("fd_count", .count(handover.descriptors.count)), ("max_per_frame", .count(LayerHandover.maximumDescriptorsPerReply))])
        }
        let (pipe, keepalive) = (handover.pipeWrite, handover.keepaliveRead)
        startDetachedThread {
            // The stream is written as the client reads it; a client that closes the pipe
            // ends it (EPIPE). composefs-rs's writer then waits for the client to close the
            // keepalive pipe before releasing what the layer's source holds; a repository
            // holds nothing (no lock), so both ends go as soon as the stream is written.
            for chunk in chunks {
                guard (try? pipe.write(chunk.encoded)) != nil else { break }
            }
            withExtendedLifetime(keepalive) {}
        }
        let reply: [(String, JSONValue)] = [("dir_count", .count(handover.directoryCount))]
        for batch in frames.dropLast() {
            guard stream.send(reply, descriptors: batch) else { break }
        }
        return .reply(reply, descriptors: frames.last ?? [])
    }

    /// Stores a layer from the pipe (descriptor 0) of its splitdirfdstream and the directories
    /// (descriptors 1…) its FileBackedData chunks name files below.
    func putLayer(_ parameters: VarlinkParameters, descriptors: [FileDescriptor]) throws(VarlinkError) -> VarlinkOutcome {
        _ = try parameters.unsigned("handle")
        let diffIDText = try parameters.string("diff_id")
        let zeroCopy = try parameters.bool("zerocopy")
        guard descriptors.count >= 2 else {
            throw invalidRequest("expected at least 2 fds (1 pipe + >=1 dir fd), got \(descriptors.count)")
        }
        let diffID: Digest
        do { diffID = try Digest(parsing: diffIDText) } catch { throw invalidDigest(error.description) }
        let store = try imageStore(parameters)
        let alreadyPresent = store.repository.streamID(ImageStore.layerStream(diffID)) != nil
        var reader = SplitdirfdReader(fileDescriptor: descriptors[0].raw, path: "the layer's pipe")
        let received: ReceivedLayer
        do {
            received = try store.receiveLayer(diffID, from: &reader, directories: Array(descriptors.dropFirst()), zeroCopy: zeroCopy)
        } catch let .diffIDMismatch(expected, actual) {
            throw ComposefsInterface.oci.error("DiffIdMismatch", [("expected", .string(expected.description)), ("actual", .string(actual.description))])
        } catch {
            throw ComposefsInterface.oci.internalError(error.description)
        }
        withExtendedLifetime(descriptors) {}
        let statistics = received.statistics
        return .reply([
            ("layer_verity", .string(received.stream.hex)), ("already_present", .bool(alreadyPresent)),
            ("objects_reflinked", .count(statistics.reflinked)), ("objects_hardlinked", .count(statistics.hardlinked)),
            ("objects_copied", .count(statistics.copied)), ("objects_already_present", .count(statistics.alreadyPresent)),
        ])
    }

    /// Records an image from its manifest and config (as they are) and its layers' streams
    /// (the `layer_verity` PutLayer or HasLayer gave for each diff_id), and tags it `name`.
    func finalizeImage(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let manifest = try parameters.string("manifest_json")
        let config = try parameters.string("config_json")
        let layerRefs = try parameters.objects("layers")
        let name = try parameters.optionalString("name")
        let store = try imageStore(parameters)
        var layers: [(diffID: Digest, stream: ObjectID)] = []
        for layer in layerRefs {
            let diffIDText = try layer.string("diff_id")
            let verityText = try layer.string("layer_verity")
            let diffID: Digest
            do { diffID = try Digest(parsing: diffIDText) } catch { throw invalidDigest("diff_id \"\(diffIDText)\": \(error)") }
            guard let verity = ObjectID(hex: verityText, algorithm: store.repository.algorithm) else {
                throw invalidDigest("layer_verity \"\(verityText)\": not a \(store.repository.algorithm.name) digest in hex")
            }
            layers.append((diffID, verity))
        }
        let image: FinalizedImage
        do {
            image = try store.finalizeImage(manifest: Array(manifest.utf8), config: Array(config.utf8), layers: layers, name: name)
        } catch {
            throw ComposefsInterface.oci.internalError(error.description)
        }
        return .reply([
            ("manifest_digest", .string(image.manifestDigest.description)), ("manifest_verity", .string(image.manifestStream.hex)),
            ("config_digest", .string(image.configDigest.description)), ("config_verity", .string(image.configStream.hex)),
        ])
    }
}

/// The descriptors GetLayer hands over, laid out as composefs-rs 0.9's transport lays them:
/// the pipe's read end; `directoryCount` directory slots, objects/ in one and placeholders
/// (/dev/null and memfds, alternately) in the others; then the keepalive pipe's write end
/// and up to two more placeholders, which the client holds until it is done. The counts of
/// slots, trailing descriptors and replies follow composefs-rs's formulas from a seed, the
/// first 8 bytes (little-endian) of SHA-256 of the layer's stream name; which slot holds
/// objects/ is taken from the seed too, though not by composefs-rs's shuffle (the chunks name
/// their directory, so no client depends on where it is).
struct LayerHandover {
    /// Below the kernel's 253 descriptors per message.
    static let maximumDescriptorsPerReply = 240

    let descriptors: [FileDescriptor]
    let directoryCount: Int
    let objectsIndex: UInt32
    /// Kept here: where the producer writes, and the keepalive pipe's read end.
    let pipeWrite: FileDescriptor
    let keepaliveRead: FileDescriptor
    let seed: UInt64

    static func seed(_ streamName: String) -> UInt64 {
        let hex = Digest.sha256(Array(streamName.utf8)).hex
        return (Hex.decode(hex.prefix(16)) ?? []).reversed().reduce(0) { $0 << 8 | UInt64($1) }
    }

    init(objects: FileDescriptor, seed: UInt64) throws(SystemError) {
        self.seed = seed
        let (pipeRead, pipeWrite) = try FileDescriptor.pipe("layer pipe")
        let (keepaliveRead, keepaliveWrite) = try FileDescriptor.pipe("keepalive pipe")
        var placeholders = 0
        func placeholder() throws(SystemError) -> FileDescriptor {
            defer { placeholders += 1 }
            return placeholders % 2 == 0
                ? try FileDescriptor.open("/dev/null", O_RDONLY) : try FileDescriptor.anonymousMemoryFile("composefs-layer-transfer-dummy")
        }
        // One real directory: 1 or 2 placeholder slots.
        let slots = 1 + Int((seed >> 8) % 2 + 1)
        let objectsSlot = UInt32((seed >> 24) % UInt64(slots))
        var all = [pipeRead]
        for slot in 0..<UInt32(slots) { all.append(try slot == objectsSlot ? objects : placeholder()) }
        all.append(keepaliveWrite)
        placeholders = 0
        for _ in 0..<(seed >> 16) % 3 { all.append(try placeholder()) }
        descriptors = all
        directoryCount = slots
        objectsIndex = objectsSlot
        self.pipeWrite = pipeWrite
        self.keepaliveRead = keepaliveRead
    }

    /// The descriptors split over replies, the first ones one longer where they do not divide
    /// evenly: one reply without `more` (nil when they do not fit in one), else at least
    /// three (seed-chosen) and as many as keep each within the limit.
    func frames(more: Bool) -> [[FileDescriptor]]? {
        let count = descriptors.count
        let frameCount: Int
        if more {
            let chosen = count < 3 ? max(count, 1) : min(max(Int(seed % UInt64(count + 1)), 3), count)
            let needed = (count + Self.maximumDescriptorsPerReply - 1) / Self.maximumDescriptorsPerReply
            frameCount = max(min(max(chosen, needed), count), 1)
        } else {
            guard count <= Self.maximumDescriptorsPerReply else { return nil }
            frameCount = 1
        }
        var frames: [[FileDescriptor]] = []
        var next = 0
        for index in 0..<frameCount {
            let size = count / frameCount + (index < count % frameCount ? 1 : 0)
            frames.append(Array(descriptors[next..<next + size]))
            next += size
        }
        return frames
    }
}
