// org.composefs.Oci: stored container images (list, check, inspect, tag, compute ids, mount)
// and pulls, which stream their progress to clients that call with `more`.

import ComposeFS
import ComposeFSBase
import ComposeFSCLI
import Dispatch
import FsVerity
import OCI
import Repository
import Synchronization
import Varlink

extension CfsctlVarlinkService {
    func imageStore(_ parameters: VarlinkParameters) throws(VarlinkError) -> ImageStore {
        ImageStore(repository: try repository(parameters, .oci))
    }

    /// The tagged images, those whose name contains `filter` when given.
    func listImages(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let filter = try parameters.optionalString("filter")
        do {
            let images = try store.images().filter { image in filter.map { image.name.contains($0) } ?? true }
            return .reply([("images", .array(images.map(\.jsonValue)))])
        } catch {
            throw ComposefsInterface.oci.internalError(error.description)
        }
    }

    /// The repository's fsck and the check of every tagged image (or of `image`).
    func checkImages(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let only = try parameters.optionalString("image")
        let repositoryReport: FsckReport
        let images: ImageCheckReport
        do {
            repositoryReport = try store.repository.fsck()
            images = try store.checkImages(only: only)
        } catch {
            throw ComposefsInterface.oci.internalError("\(error)")
        }
        guard case let .object(members) = images.jsonValue(repository: repositoryReport) else { return .empty }
        return .reply(members)
    }

    /// A tag, or `@sha256:…` naming a manifest; NoSuchImage when it names nothing stored.
    func storedImage(_ store: ImageStore, _ text: String) throws(VarlinkError) -> StoredImage {
        let reference: OCIReference
        do { reference = try OCIReference(parsing: text) } catch {
            throw ComposefsInterface.oci.internalError("invalid image reference: \(error)")
        }
        do {
            switch reference {
            case let .named(name):
                guard try store.tags().contains(where: { $0.name == name }) else { throw noSuchImage(name) }
            case let .digest(digest):
                guard store.repository.streamID(ImageStore.manifestStream(digest)) != nil else { throw noSuchImage(digest.description) }
            }
            return try store.open(reference)
        } catch let error as VarlinkError {
            throw error
        } catch {
            throw ComposefsInterface.oci.internalError("\(error)")
        }
    }

    func noSuchImage(_ image: String) -> VarlinkError { ComposefsInterface.oci.error("NoSuchImage", [("image", .string(image))]) }

    func inspect(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let image = try storedImage(store, try parameters.string("image"))
        do {
            let format = store.defaultFormat
            let document = try image.inspectDocument(
                referrers: try store.referrers(of: image.manifestDigest), erofs: image.imageID(format), bootErofs: image.bootImageID(format))
            guard case let .object(members) = document else { return .empty }
            return .reply(members)
        } catch {
            throw ComposefsInterface.oci.internalError("\(error)")
        }
    }

    func tag(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let manifestDigest = try parameters.string("manifest_digest")
        let name = try parameters.string("name")
        let digest: Digest
        do { digest = try Digest(parsing: manifestDigest) } catch {
            throw ComposefsInterface.oci.internalError("invalid digest: \(error)")
        }
        do { try store.tag(digest, as: name) } catch { throw ComposefsInterface.oci.internalError(error.description) }
        return .empty
    }

    func untag(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let name = try parameters.string("name")
        do { try store.untag(name) } catch { throw ComposefsInterface.oci.internalError(error.description) }
        return .empty
    }

    /// `xattrs` as the wire names composefs-rs's XattrFiltering.
    func xattrs(_ parameters: VarlinkParameters) throws(VarlinkError) -> XattrFilter? {
        switch try parameters.optionalString("xattrs") {
        case nil: return nil
        case "AllowlistOnly": return .allowlistOnly
        case "KeepUserXattrs": return .keepUserXattrs
        default: throw .invalidParameter("xattrs")
        }
    }

    /// The image id of a tag's tree (or of `@config-digest`'s, its config stream by `verity`
    /// when given), as `cfsctl oci compute-id`.
    func computeID(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let image = try parameters.string("image")
        let verityText = try parameters.optionalString("verity")
        let bootable = try parameters.bool("bootable")
        let xattrs = try xattrs(parameters) ?? .allowlistOnly
        let reference: OCIReference
        do { reference = try OCIReference(parsing: image) } catch {
            throw ComposefsInterface.oci.internalError("invalid image reference: \(error)")
        }
        let verity = try verityText.map { (hex) throws(VarlinkError) -> ObjectID in
            guard let id = ObjectID(hex: hex, algorithm: store.repository.algorithm) else {
                throw ComposefsInterface.oci.internalError("invalid verity: '\(hex)' is not a \(store.repository.algorithm.name) digest in hex")
            }
            return id
        }
        let selection: ConfigSelection =
            switch reference {
            case let .named(name): .tag(name)
            case let .digest(digest): .config(digest, verity: verity)
            }
        do {
            let root = try store.rootfs(selection, options: RootfsOptions(xattrs: xattrs, bootable: bootable))
            return .reply([("image_id", .string(try store.image(of: root, format: store.defaultFormat).id.hex))])
        } catch {
            throw ComposefsInterface.oci.internalError(error.description)
        }
    }

    func ociMount(_ parameters: VarlinkParameters, descriptors: [FileDescriptor]) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let image = try parameters.string("image")
        let bootable = try parameters.bool("bootable")
        let stored: StoredImage
        do {
            stored = try store.open(image.hasPrefix("sha256:") ? .digest(try Digest(parsing: image)) : .named(image))
        } catch {
            throw noSuchImage("\(image): \(error)")
        }
        let format = store.defaultFormat
        guard let id = bootable ? stored.bootImageID(format) : stored.imageID(format) else {
            throw ComposefsInterface.oci.internalError(bootable ? "No boot EROFS image linked" : "No composefs EROFS image linked")
        }
        let request: MountRequest
        do { request = try MountRequest(parameters, descriptors: descriptors) } catch {
            throw ComposefsInterface.oci.internalError("\(error)")
        }
        do {
            return request.reply(try detachedMount(store.repository, image: id.hex, request: request))
        } catch {
            throw ComposefsInterface.oci.internalError("\(error)")
        }
    }

    /// Whether the layer with this diff_id is stored, and its stream's verity.
    func hasLayer(_ parameters: VarlinkParameters) throws(VarlinkError) -> VarlinkOutcome {
        let store = try imageStore(parameters)
        let diffID: Digest
        do { diffID = try Digest(parsing: try parameters.string("diff_id")) } catch let error as VarlinkError {
            throw error
        } catch {
            throw ComposefsInterface.oci.error("InvalidDigest", [("message", .string("\(error)"))])
        }
        let stream = store.repository.streamID(ImageStore.layerStream(diffID))
        return .reply([("present", .bool(stream != nil)), ("layer_verity", stream.map { .string($0.hex) } ?? .null)])
    }
}
