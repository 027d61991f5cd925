// org.composefs.Repository: creating and opening repositories, fsck, gc, image objects and
// refs, and mounts handed back as descriptors.

import ComposeFS
import ComposeFSBase
import ComposeFSMount
import FsVerity
import Repository
import Varlink

#if canImport(Glibc)
import Glibc
#endif

extension CfsctlVarlinkService {
    /// `algorithm` as given (`fsverity-sha512-12`, …), else SHA-512.
    func algorithm(_ parameters: VarlinkParameters) throws(VarlinkError) -> RepositoryAlgorithm {
        guard let text = try parameters.optionalString("algorithm") else { return .default }
        do { return try RepositoryAlgorithm(parsing: text) } catch {
            throw ComposefsInterface.repository.error("InvalidSpec", [("message", .string("invalid algorithm: \(error)"))])
        }
    }

    /// Creates a repository (parents too) in format V1, or accepts an identical one.
    func initRepository(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let path = try parameters.string("path")
        let algorithm = try algorithm(parameters)
        let insecure = try parameters.optionalBool("insecure") ?? options.insecure
        do {
            let result = try Repository.initialize(at: path, algorithm: algorithm, insecure: insecure)
            return .reply([("created", .bool(result == .created))])
        } catch {
            throw ComposefsInterface.repository.internalError(error.description)
        }
    }

    /// Keeps an existing repository as it is, upgrades one from before meta.json, or creates one.
    func ensureRepository(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let path = try parameters.string("path")
        let algorithm = try algorithm(parameters)
        let insecure = try parameters.optionalBool("insecure") ?? options.insecure
        let status: String
        do {
            switch try Repository.ensure(at: path, algorithm: algorithm, insecure: insecure) {
            case .alreadyInitialized: status = "Opened"
            case .created: status = "Created"
            case .upgraded: status = "Upgraded"
            }
        } catch {
            throw ComposefsInterface.repository.internalError(error.description)
        }
        return .reply([("status", .string(status))])
    }

    /// Exactly one of `path`, `user` (~/.var/lib/composefs) and `system` (/sysroot/composefs).
    func openRepository(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let path = try parameters.optionalString("path")
        let user = try parameters.optionalBool("user") ?? false
        let system = try parameters.optionalBool("system") ?? false
        func invalidSpec(_ message: String) -> VarlinkError {
            ComposefsInterface.repository.error("InvalidSpec", [("message", .string(message))])
        }
        let selected: String
        switch (path, user, system) {
        case let (path?, false, false): selected = path
        case (nil, true, false):
            guard let home = getenv("HOME") else { throw invalidSpec("$HOME must be set when in user mode") }
            selected = String(cString: home) + "/.var/lib/composefs"
        case (nil, false, true): selected = "/sysroot/composefs"
        default: throw invalidSpec("exactly one of `path`, `user`, `system` must be set")
        }
        let repository = try open(path: selected)
        var reply: [(String, JSONValue)] = [("handle", .unsigned(register(repository))), ("hash_algorithm", .string(repository.algorithm.name))]
        // For clients choosing between reflinks, hard links and copies across repositories: the
        // file system of objects/ (of the repository until its first object makes objects/).
        var objects = stat()
        if stat(selected + "/objects", &objects) == 0 || stat(selected, &objects) == 0 {
            reply.append(("objects_device_id", .unsigned(UInt64(objects.st_dev))))
        }
        return .reply(reply)
    }

    func closeRepository(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let handle = try parameters.unsigned("handle")
        guard unregister(handle) else { throw ComposefsInterface.repository.invalidHandle(handle) }
        return .empty
    }

    func fsck(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let repository = try repository(parameters, .repository)
        let metadataOnly = try parameters.optionalBool("metadata_only") ?? false
        do {
            guard case let .object(members) = try repository.fsck(metadataOnly: metadataOnly).jsonValue else { return .empty }
            return .reply(members)
        } catch {
            throw ComposefsInterface.repository.internalError(error.description)
        }
    }

    func collectGarbage(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let repository = try repository(parameters, .repository)
        let dryRun = try parameters.bool("dry_run")
        let roots = try parameters.strings("roots")
        let result: GarbageCollectionResult
        do { result = try repository.collectGarbage(roots: roots, dryRun: dryRun) } catch {
            throw ComposefsInterface.repository.internalError(error.description)
        }
        return .reply([
            (
                "result",
                .object([
                    ("objects_removed", .count(result.objectsRemoved)), ("objects_bytes", .integer(result.bytesRemoved)),
                    ("images_pruned", .count(result.imagesPruned)), ("streams_pruned", .count(result.streamsPruned)),
                ])
            ),
            ("dry_run", .bool(dryRun)),
        ])
    }

    func imageObjects(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let repository = try repository(parameters, .repository)
        let name = try parameters.string("name")
        let objects: [ObjectID]
        do { objects = try repository.imageObjects(name) } catch .imageNotFound(let missing) {
            throw ComposefsInterface.repository.error("NoSuchRef", [("reference", .string(missing))])
        } catch {
            throw ComposefsInterface.repository.internalError(error.description)
        }
        return .reply([("object_ids", .array(objects.map(\.prefixedHex).sorted().map { .string($0) }))])
    }

    func listImageRefs(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let repository = try repository(parameters, .repository)
        do {
            guard case let .object(members) = imageRefsDocument(try repository.imageRefs()) else { return .empty }
            return .reply(members)
        } catch {
            throw ComposefsInterface.repository.internalError(error.description)
        }
    }

    func mount(_ parameters: VarlinkParameters, descriptors: [FileDescriptor]) throws(VarlinkError) -> VarlinkOutcome {
        let repository = try repository(parameters, .repository)
        let name = try parameters.string("name")
        let mount = try MountRequest(parameters, descriptors: descriptors)
        do {
            return mount.reply(try detachedMount(repository, image: name, request: mount))
        } catch {
            throw ComposefsInterface.repository.internalError("\(error)")
        }
    }

    /// The repository's image `name` mounted detached (verity required wherever the repository
    /// and the image's measurement promise it, as `cfsctl mount`).
    func detachedMount(_ repository: Repository, image name: String, request: MountRequest) throws -> FileDescriptor {
        let image = try repository.openImage(name)
        let options = MountOptions(
            basedirs: [repository.path + "/objects"], verity: repository.isSecure && image.verified ? .required : .off,
            readOnly: !request.readWrite, upperdir: request.overlay.map { "/proc/self/fd/\($0.upper.raw)" },
            workdir: request.overlay.map { "/proc/self/fd/\($0.work.raw)" })
        defer { withExtendedLifetime(request) {} }
        return try ComposefsMount.detachedMount(imageFileDescriptor: image.file.raw, imageName: name, options: options)
    }
}

/// The `options` of Mount and OciMount, with the descriptors the call passed: none, or the
/// overlay's upper and work directories when `overlay` is set.
struct MountRequest {
    var overlay: (upper: FileDescriptor, work: FileDescriptor)?
    var readWrite: Bool

    /// InvalidSpec (of org.composefs.Repository) when the descriptors do not fit the options.
    init(_ parameters: VarlinkParameters, descriptors: [FileDescriptor]) throws(VarlinkError) {
        let options = try parameters.object("options")
        let overlay = try options.optionalBool("overlay") ?? false
        readWrite = try options.optionalBool("read_write") ?? false
        let expected = overlay ? 2 : 0
        guard descriptors.count == expected else {
            throw ComposefsInterface.repository.error(
                "InvalidSpec", [("message", .string("Mount expects \(expected) fds for the requested options, got \(descriptors.count)"))])
        }
        self.overlay = overlay ? (descriptors[0], descriptors[1]) : nil
    }

    /// The reply: the mount is the first (only) descriptor passed back.
    func reply(_ mount: FileDescriptor) -> VarlinkOutcome { .reply([("fd_index", .integer(0))], descriptors: [mount]) }
}
