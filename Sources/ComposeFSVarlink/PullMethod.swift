// org.composefs.Oci.Pull: the pull runs as a task while the connection's thread relays its
// progress as PullProgress frames, one event each as composefs-rs 0.9 reports them (started,
// progress, done or skipped for each layer by diff_id; message for the rest), then the
// terminal frame with `completed`. Without `more`, only that one.

import ComposeFS
import ComposeFSBase
import Dispatch
import FsVerity
import OCI
import Repository
import Synchronization
import Varlink

extension CfsctlVarlinkService {
    func pull(_ parameters: VarlinkParameters, more: Bool, stream: any VarlinkReplyStream) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let image = try parameters.string("image")
        let name = try parameters.optionalString("name")
        // local_fetch and storage_root only concern containers-storage sources, which are not
        // supported here (a containers-storage: image fails in the pull, naming the transport).
        _ = try parameters.string("local_fetch")
        _ = try parameters.optionalString("storage_root")
        let bootable = try parameters.bool("bootable")
        let xattrs = try xattrs(parameters)
        let expectedHex = try parameters.optionalString("expected_digest")
        func invalidRequest(_ message: String) -> VarlinkError {
            ComposefsInterface.oci.error("InvalidRequest", [("message", .string(message))])
        }
        if expectedHex != nil && !bootable { throw invalidRequest("expected_digest requires bootable") }
        if expectedHex != nil && xattrs != nil {
            throw invalidRequest("expected_digest and xattrs are mutually exclusive: expected_digest searches every mode")
        }
        // Checked before the pull, which may take long.
        let expected = try expectedHex.map { (hex) throws(VarlinkError) -> ObjectID in
            guard let id = ObjectID(hex: hex, algorithm: store.repository.algorithm) else {
                throw ComposefsInterface.oci.error(
                    "InvalidDigest",
                    [("message", .string("invalid expected_digest: '\(hex)' is not a \(store.repository.algorithm.name) digest in hex"))])
            }
            return id
        }

        let result = try relay(pullOf: image, tag: name, into: store, more: more, to: stream)
        var completed: [(String, JSONValue)] = [
            ("manifest_digest", .string(result.manifestDigest.description)),
            ("config_digest", .string(result.configDigest.description)),
            ("manifest_verity", .string(result.manifestStream.hex)),
        ]
        do {
            completed.append(("config_verity", .string(try store.open(manifest: result.manifestDigest).configStream.hex)))
            completed.append(("stats", .string(result.statistics.summary)))
            var boot: (id: ObjectID, xattrs: XattrFilter, format: FormatVersion)?
            if let expected {
                switch try store.findBootImage(manifest: result.manifestDigest, expected: expected) {
                case let .found(xattrs, format, id): boot = (id, xattrs, format)
                case let .notFound(tried):
                    throw ComposefsInterface.oci.error(
                        "BootImageMismatch", [("expected", .string(expected.hex)), ("tried", .count(tried))])
                }
            } else if bootable {
                let mode = xattrs ?? .allowlistOnly
                boot = (try store.bootImage(manifest: result.manifestDigest, xattrs: mode), mode, store.defaultFormat)
            }
            completed += [
                ("boot_image", boot.map { .string($0.id.hex) } ?? .null),
                ("boot_image_mode", boot.map { .string($0.xattrs.rawValue) } ?? .null),
                // composefs-rs's `{:?}` of the format version.
                ("boot_image_format_version", boot.map { .string("V\($0.format.rawValue)") } ?? .null),
            ]
        } catch let error as VarlinkError {
            throw error
        } catch {
            throw ComposefsInterface.oci.internalError("\(error)")
        }
        return .reply([("completed", .object(completed))])
    }

    /// Runs the pull, sending its progress frames to `stream` when `more`, and waits for it.
    /// A client that goes away cancels it.
    func relay(
        pullOf image: String, tag: String?, into store: ImageStore, more: Bool, to stream: any VarlinkReplyStream
    ) throws(VarlinkError) -> PullResult {
        let queue = ProgressQueue()
        let options = PullOptions(
            registry: RegistryOptions(stagingDirectory: store.repository.path), parallelLayers: max(2, availableProcessors))
        let relayEvent: @Sendable (PullEvent) -> Void = { event in
            if let frame = Self.frame(for: event) { queue.push(frame) }
        }
        let events = more ? relayEvent : nil
        let task = Task {
            do throws(OCIError) {
                queue.finish(.success(try await store.pull(image, tag: tag, options: options, events: events)))
            } catch {
                queue.finish(.failure(error))
            }
        }
        var clientGone = false
        while true {
            let (frames, outcome) = queue.next()
            for frame in frames where !clientGone {
                if !stream.send(frame.parameters) {
                    clientGone = true
                    task.cancel()
                }
            }
            guard let outcome else { continue }
            do { return try outcome.get() } catch { throw ComposefsInterface.oci.internalError(error.description) }
        }
    }

    /// The PullProgress frame of a pull event (none while the images are built: composefs-rs
    /// reports nothing then).
    static func frame(for event: PullEvent) -> ProgressFrame? {
        switch event {
        case let .message(text):
            return ProgressFrame(event: "message", value: .string(text))
        case let .layerSkipped(diffID):
            return ProgressFrame(event: "skipped", layer: diffID, value: .object([("id", .string(diffID.description))]))
        case let .layerStarted(diffID, total):
            return ProgressFrame(
                event: "started", layer: diffID,
                value: .object([("id", .string(diffID.description)), ("total", .unsigned(total)), ("unit", .string("Bytes"))]))
        case let .layerProgress(diffID, fetched, total):
            return ProgressFrame(
                event: "progress", layer: diffID,
                value: .object([("id", .string(diffID.description)), ("fetched", .unsigned(fetched)), ("total", .unsigned(total))]))
        case let .layerDone(diffID, transferred):
            return ProgressFrame(
                event: "done", layer: diffID, value: .object([("id", .string(diffID.description)), ("transferred", .unsigned(transferred))]))
        case .buildingImage:
            return nil
        }
    }
}

/// One PullProgress frame: the event's name and value, and the layer it is about.
struct ProgressFrame: Sendable {
    var event: String
    var layer: Digest?
    var value: JSONValue

    init(event: String, layer: Digest? = nil, value: JSONValue) {
        self.event = event
        self.layer = layer
        self.value = value
    }

    var parameters: [(String, JSONValue)] { [(event, value)] }
}

/// Frames from the pull task to the connection's thread, then the pull's outcome. A layer's
/// byte count that the client has not been sent yet is replaced by the newer one (as
/// composefs-rs coalesces them), so a slow client gets fewer frames rather than an ever
/// longer queue.
final class ProgressQueue: Sendable {
    struct State: ~Copyable {
        var frames: [ProgressFrame] = []
        var outcome: Result<PullResult, OCIError>?
    }

    let state = Mutex(State())
    let signal = DispatchSemaphore(value: 0)

    func push(_ frame: ProgressFrame) {
        state.withLock { state in
            if frame.event == "progress", let pending = state.frames.lastIndex(where: { $0.event == "progress" && $0.layer == frame.layer }) {
                state.frames[pending] = frame
            } else {
                state.frames.append(frame)
            }
        }
        signal.signal()
    }

    func finish(_ outcome: Result<PullResult, OCIError>) {
        state.withLock { $0.outcome = outcome }
        signal.signal()
    }

    /// Waits for something new: the frames pending, and the outcome once the pull has ended.
    func next() -> (frames: [ProgressFrame], outcome: Result<PullResult, OCIError>?) {
        signal.wait()
        return state.withLock { state in
            defer { state.frames = [] }
            return (state.frames, state.outcome)
        }
    }
}
