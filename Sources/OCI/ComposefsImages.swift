// The composefs images of stored OCI images, as composefs-rs 0.9 makes and records them: the
// tree of the merged layers (Rootfs), one image per format the repository writes (only
// images/<hex>, no ref), and the config stream rewritten to name them (then the manifest
// stream, to name the new config stream), which is what keeps them through gc.

import Crypto
import ComposeFS
import ComposeFSBase
import FsVerity
import Repository

/// Which image's tree to build (`cfsctl oci dump|compute-id|prepare-boot <ref|@config> [verity]`).
public enum ConfigSelection: Sendable {
    /// A tag: the config its manifest names.
    case tag(String)
    /// A config by digest, its stream by verity when given; without one, every layer is
    /// hashed again and checked against its diff_id.
    case config(Digest, verity: ObjectID?)
}

/// What `pull --bootable --expected-digest` found.
public enum BootImageMatch: Sendable {
    case found(xattrs: XattrFilter, format: FormatVersion, id: ObjectID)
    /// Nothing matched; how many mode and format combinations were tried.
    case notFound(tried: Int)
}

extension ImageStore {
    /// The tree of an image as composefs-rs 0.9 builds it. With `storeObjects`, the expanded
    /// content of sparse files is stored too (images to be written need it; ids do not).
    public func rootfs(_ selection: ConfigSelection, options: RootfsOptions, storeObjects: Bool = false) throws(OCIError) -> Inode {
        let (rootfs, image) = try merge(selection, storeObjects: storeObjects)
        return try rootfs.finish(options, image: image)
    }

    /// The merged layers of the selected image, and its name for errors.
    private func merge(_ selection: ConfigSelection, storeObjects: Bool) throws(OCIError) -> (Rootfs, image: String) {
        switch selection {
        case let .tag(name):
            let image = try open(manifest: try resolve(tag: name))
            return (try merge(layers: try image.layers(), verifyLayers: false, storeObjects: storeObjects), name)
        case let .config(digest, verity):
            let (document, config) = try readConfig(digest, stream: verity)
            let layers = try config.layerStreams(in: document.refs, config: digest)
            return (try merge(layers: layers, verifyLayers: verity == nil, storeObjects: storeObjects), digest.description)
        }
    }

    /// The merged layers (bottom first), transformed; `image` names the image in errors.
    /// `verifyLayers` hashes each layer's tar against its diff_id first.
    func rootfs(
        layers: [(diffID: Digest, stream: ObjectID)], image: String, options: RootfsOptions, verifyLayers: Bool, storeObjects: Bool
    ) throws(OCIError) -> Inode {
        try merge(layers: layers, verifyLayers: verifyLayers, storeObjects: storeObjects).finish(options, image: image)
    }

    /// The layers (bottom first) applied, before any transform.
    private func merge(
        layers: [(diffID: Digest, stream: ObjectID)], verifyLayers: Bool, storeObjects: Bool
    ) throws(OCIError) -> Rootfs {
        let repository = self.repository
        let rootfs = Rootfs(
            expandSparse: { (entry, content) throws(OCIError) in
                try SparseFiles.expand(entry, content, repository: repository, store: storeObjects)
            },
            readObject: { (id) throws(OCIError) in try repositoryCall { () throws(RepositoryError) in try repository.readObject(id) } })
        for layer in layers {
            let stream = try repositoryCall { () throws(RepositoryError) in
                try SplitStream(try repository.readObject(layer.stream), algorithm: repository.algorithm)
            }
            guard stream.contentType == layerContentType else {
                throw .repository(.corrupt(path: "layer stream \(layer.stream.hex)", reason: "Invalid splitstream content type"))
            }
            if verifyLayers { try verify(stream, diffID: layer.diffID) }
            try rootfs.apply(try LayerReader.entries(of: stream, layer: layer.diffID.description), layer: layer.diffID.description)
        }
        return rootfs
    }

    /// The layer's tar must hash to its diff_id.
    private func verify(_ stream: SplitStream, diffID: Digest) throws(OCIError) {
        var hasher = SHA256()
        try repositoryCall { () throws(RepositoryError) in
            try stream.reassemble(openObject: { id throws(RepositoryError) in try repository.openObject(id) }) { hasher.update(bufferPointer: $0) }
        }
        let actual = Digest(uncheckedAlgorithm: "sha256", hex: Hex.encode(hasher.finalize()))
        guard actual == diffID else {
            throw .digestMismatch(what: "layer \(diffID) (its tar)", expected: diffID.description, actual: actual.description)
        }
    }

    /// The image of a tree in `format`, and its id.
    public func image(of root: Inode, format: FormatVersion) throws(OCIError) -> (bytes: [UInt8], id: ObjectID) {
        let bytes = try repositoryCall { () throws(RepositoryError) in try Repository.image(of: root, format: format) }
        return (bytes, FsVerity.digest(of: bytes, algorithm: repository.algorithm))
    }

    /// Writes the image of `root` in every format the repository writes, as images/<hex> only.
    func writeImages(_ root: Inode) throws(OCIError) -> [FormatVersion: ObjectID] {
        var ids: [FormatVersion: ObjectID] = [:]
        for format in repository.imageFormats {
            let bytes = try image(of: root, format: format).bytes
            ids[format] = try repositoryCall { () throws(RepositoryError) in try repository.writeImage(bytes, name: nil) }
        }
        return ids
    }

    /// Records `images` in the image's config stream (keeping its bytes, so its digest), then
    /// points the manifest stream at the new config stream, and tags it when `tag` is given.
    func record(_ images: ComposefsImages, for image: StoredImage, tag: String?) throws(OCIError) {
        let layers = try image.layers()
        let configDigest = image.manifest.config.digest
        let config = try storeConfig(image.configBytes, digest: configDigest, layers: layers, images: images)
        _ = try storeManifest(image.manifestBytes, digest: image.manifestDigest, config: (configDigest, config), layers: layers)
        if let tag { try self.tag(image.manifestDigest, as: tag) }
    }

    /// Fails unless the repository writes the format its default format is stored as (a V0
    /// repository has none: composefs-rs looks its image up under the V1 name).
    private func checkDefaultFormatIsStored(boot: Bool) throws(OCIError) {
        guard repository.imageFormats.contains(defaultFormat.stored) else {
            throw .unsupported("commit_images did not produce the repository's default \(boot ? "boot " : "")EROFS format")
        }
    }

    /// Builds the image's composefs images, records them in its config (its bootable ones
    /// kept) and tags it.
    public func makeImages(manifest digest: Digest, tag: String?) throws(OCIError) {
        try checkDefaultFormatIsStored(boot: false)
        let image = try open(manifest: digest)
        let root = try rootfs(
            layers: try image.layers(), image: digest.description, options: RootfsOptions(), verifyLayers: false, storeObjects: true)
        let ids = try writeImages(root)
        try record(ComposefsImages(v2: ids[.v2], v1: ids[.v1], boot: image.images.boot), for: image, tag: tag)
    }

    /// The image's bootable image in the default format built with `xattrs`: the one recorded,
    /// or one built now (in every format, recorded beside the others; the tag is left alone).
    public func bootImage(manifest digest: Digest, xattrs: XattrFilter = .allowlistOnly) throws(OCIError) -> ObjectID {
        let image = try open(manifest: digest)
        if let existing = image.bootImageID(defaultFormat, xattrs: xattrs) { return existing }
        try checkDefaultFormatIsStored(boot: true)
        let root = try rootfs(
            layers: try image.layers(), image: digest.description, options: RootfsOptions(xattrs: xattrs, bootable: true),
            verifyLayers: false, storeObjects: true)
        let ids = try writeImages(root)
        var images = image.images
        for (format, id) in ids where format != .v0 { images.boot[ImageRefName.boot(format, xattrs)] = id }
        try record(images, for: image, tag: nil)
        guard let id = ids[defaultFormat.stored] else { throw .notFound("the boot image in the default format") }
        return id
    }

    /// Tries every xattr mode and the V1 and V2 formats (recorded images first, then building
    /// the tree once per mode) until a bootable image has the id `expected`; one found by
    /// building is stored and recorded.
    public func findBootImage(manifest digest: Digest, expected: ObjectID) throws(OCIError) -> BootImageMatch {
        let formats: [FormatVersion] = [.v1, .v2]
        var tried = 0
        for xattrs in XattrFilter.allCases {
            let image = try open(manifest: digest)
            var recorded: [FormatVersion] = []
            for format in formats {
                guard let id = image.bootImageID(format, xattrs: xattrs) else { continue }
                if id == expected { return .found(xattrs: xattrs, format: format, id: id) }
                tried += 1
                recorded.append(format)
            }
            if recorded.count == formats.count { continue }
            let root = try rootfs(
                layers: try image.layers(), image: digest.description, options: RootfsOptions(xattrs: xattrs, bootable: true),
                verifyLayers: false, storeObjects: true)
            for format in formats where !recorded.contains(format) {
                let (bytes, id) = try self.image(of: root, format: format)
                guard id == expected else {
                    tried += 1
                    continue
                }
                _ = try repositoryCall { () throws(RepositoryError) in try repository.writeImage(bytes, name: nil) }
                var images = image.images
                images.boot[ImageRefName.boot(format, xattrs)] = id
                try record(images, for: image, tag: nil)
                return .found(xattrs: xattrs, format: format, id: id)
            }
        }
        return .notFound(tried: tried)
    }

    /// `oci prepare-boot`'s first step: the selected image's tree made a container root, not
    /// yet bootable: where composefs-rs finds the kernels to write (the boot transform empties
    /// /boot). Its files' contents are stored (sparse ones expanded).
    public func bootCandidate(_ selection: ConfigSelection) throws(OCIError) -> BootCandidate {
        let (rootfs, image) = try merge(selection, storeObjects: true)
        _ = try rootfs.finish(RootfsOptions(), image: image)
        return BootCandidate(rootfs: rootfs, image: image)
    }

    /// `oci prepare-boot`'s image: the candidate made bootable and stored in every format
    /// (images/<hex>, named by nothing, so gc may take it), and the kernel argument that boots
    /// it (`Repository.bootArgument`).
    public func prepareBoot(_ candidate: BootCandidate) throws(OCIError) -> BootArgument {
        // The container-root transform again is a no-op; then the boot transform.
        let root = try candidate.rootfs.finish(RootfsOptions(bootable: true), image: candidate.image)
        let ids = try writeImages(root)
        return try repositoryCall { () throws(RepositoryError) in try repository.bootArgument(images: ids) }
    }
}

/// An image's tree before the boot transform (`ImageStore.bootCandidate`).
public struct BootCandidate {
    fileprivate let rootfs: Rootfs
    fileprivate let image: String

    /// The tree: the container-root transform done, /boot still there.
    public var root: Inode { rootfs.root }
}
