// cfsctl's varlink service, as composefs-rs 0.9 serves it: org.composefs.Repository and
// org.composefs.Oci on one socket. Repositories are reached through handles: OpenRepository
// opens one and returns a number that every other call passes, until CloseRepository. The
// handles belong to the service, not to a connection, so one client may open a repository
// and others use it.

import ComposeFSBase
import FsVerity
import OCI
import Repository
import Synchronization
import Varlink

#if canImport(Glibc)
import Glibc
#endif

/// The two interfaces, each with its own error names.
enum ComposefsInterface: String {
    case repository = "org.composefs.Repository"
    case oci = "org.composefs.Oci"

    func error(_ name: String, _ parameters: [(String, JSONValue)]) -> VarlinkError {
        VarlinkError(rawValue + "." + name, parameters)
    }

    func internalError(_ message: String) -> VarlinkError { error("InternalError", [("message", .string(message))]) }

    func invalidHandle(_ handle: UInt64) -> VarlinkError { error("InvalidHandle", [("handle", .unsigned(handle))]) }

    func repoNotFound(_ message: String) -> VarlinkError { error("RepoNotFound", [("message", .string(message))]) }
}

public final class CfsctlVarlinkService: VarlinkService {
    /// How repositories are opened (cfsctl's global flags; defaults under socket activation).
    public struct OpenOptions: Sendable {
        /// Do not require fs-verity on objects (`--insecure`).
        public var insecure: Bool
        /// Refuse repositories without fs-verity (`--require-verity`).
        public var requireVerity: Bool
        /// Do not give a repository from before meta.json one (`--no-upgrade`).
        public var noUpgrade: Bool

        public init(insecure: Bool = false, requireVerity: Bool = false, noUpgrade: Bool = false) {
            self.insecure = insecure
            self.requireVerity = requireVerity
            self.noUpgrade = noUpgrade
        }
    }

    struct HandleTable: ~Copyable {
        /// The last handle given; 0 is never one.
        var last: UInt64 = 0
        var repositories: [UInt64: Repository] = [:]
    }

    let options: OpenOptions
    let handles = Mutex(HandleTable())

    public init(options: OpenOptions = OpenOptions()) { self.options = options }

    public let info = VarlinkServiceInfo(
        vendor: "org.composefs", product: "cfsctl", version: "0.9.0", url: "https://github.com/composefs/composefs-rs")

    public var interfaces: [VarlinkInterface] {
        [
            VarlinkInterface(name: ComposefsInterface.repository.rawValue, description: InterfaceDescriptions.repository),
            VarlinkInterface(name: ComposefsInterface.oci.rawValue, description: InterfaceDescriptions.oci),
        ]
    }

    public func handle(_ call: VarlinkCall, descriptors: [FileDescriptor], stream: any VarlinkReplyStream) -> VarlinkOutcome {
        do throws(VarlinkError) {
            let parameters = call.parameters
            switch call.method {
            case "org.composefs.Repository.InitRepository": return try initRepository(parameters)
            case "org.composefs.Repository.EnsureRepository": return try ensureRepository(parameters)
            case "org.composefs.Repository.OpenRepository": return try openRepository(parameters)
            case "org.composefs.Repository.CloseRepository": return try closeRepository(parameters)
            case "org.composefs.Repository.Fsck": return try fsck(parameters)
            case "org.composefs.Repository.Gc": return try collectGarbage(parameters)
            case "org.composefs.Repository.ImageObjects": return try imageObjects(parameters)
            case "org.composefs.Repository.ListImageRefs": return try listImageRefs(parameters)
            case "org.composefs.Repository.Mount": return try mount(parameters, descriptors: descriptors)
            case "org.composefs.Oci.ListImages": return try listImages(parameters)
            case "org.composefs.Oci.Check": return try checkImages(parameters)
            case "org.composefs.Oci.Inspect": return try inspect(parameters)
            case "org.composefs.Oci.Tag": return try tag(parameters)
            case "org.composefs.Oci.Untag": return try untag(parameters)
            case "org.composefs.Oci.ComputeId": return try computeID(parameters)
            case "org.composefs.Oci.Pull": return try pull(parameters, more: call.more, stream: stream)
            case "org.composefs.Oci.OciMount": return try ociMount(parameters, descriptors: descriptors)
            case "org.composefs.Oci.GetInfo": return .reply([("features", .array([.string(Self.layerTransportFeature)]))])
            case "org.composefs.Oci.HasLayer": return try hasLayer(parameters)
            case "org.composefs.Oci.GetLayer": return try getLayer(parameters, more: call.more, stream: stream)
            case "org.composefs.Oci.PutLayer": return try putLayer(parameters, descriptors: descriptors)
            case "org.composefs.Oci.FinalizeImage": return try finalizeImage(parameters)
            default: throw .methodNotFound(call.method)
            }
        } catch {
            return .error(error)
        }
    }

    // MARK: Handles

    /// The repository `handle` names, or InvalidHandle in `interface`.
    func repository(_ parameters: VarlinkParameters, _ interface: ComposefsInterface) throws(VarlinkError) -> Repository {
        let handle = try parameters.unsigned("handle")
        guard let repository = handles.withLock({ $0.repositories[handle] }) else { throw interface.invalidHandle(handle) }
        return repository
    }

    func register(_ repository: Repository) -> UInt64 {
        handles.withLock { table in
            table.last += 1
            table.repositories[table.last] = repository
            return table.last
        }
    }

    func unregister(_ handle: UInt64) -> Bool {
        handles.withLock { $0.repositories.removeValue(forKey: handle) != nil }
    }

    /// Opens a repository as cfsctl does with the service's flags: upgraded if it predates
    /// meta.json (unless --no-upgrade), --insecure applied, --require-verity enforced.
    func open(path: String) throws(VarlinkError) -> Repository {
        let repository: Repository
        do { repository = try Repository(path: path, upgrade: !options.noUpgrade) } catch {
            throw ComposefsInterface.repository.repoNotFound(error.description)
        }
        if options.insecure { repository.treatAsInsecure() }
        if options.requireVerity && !repository.isSecure {
            throw ComposefsInterface.repository.repoNotFound(
                "repository was not initialized with fs-verity (hint: re-create with `cfsctl init` on a verity-capable filesystem)")
        }
        return repository
    }
}

extension JSONValue {
    /// A u64 as varlink's int (values past Int64 saturate; handles and counts never get there).
    static func unsigned(_ value: UInt64) -> JSONValue { .integer(Int64(clamping: value)) }

    static func count(_ value: Int) -> JSONValue { .integer(Int64(value)) }
}
