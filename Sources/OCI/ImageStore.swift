// OCI images in a repository, in composefs-rs 0.9's layout:
//   streams/oci-layer-<diff_id>       a layer's tar as a split stream ("ocilayer")
//   streams/oci-config-<digest>       the config JSON as one object ("ociconfg"); named refs
//                                     <diff_id> → layer stream, and the composefs images:
//                                     composefs.image (V2), composefs.image.v1 (V0/V1),
//                                     composefs.image.boot[.v1][.xattrs=MODE] (bootable)
//   streams/oci-manifest-<digest>     the manifest JSON as one object ("ocimanif"); named refs
//                                     config:<digest> → config stream, <diff_id> → layer stream
//   streams/refs/oci/<tag>            → ../../oci-manifest-<digest> ('%' → %25, '/' → %2F)
//   streams/refs/oci-referrers/<subject digest>/<digest>
//                                     → the manifest stream of an image naming <subject digest>
//                                       as its subject (made by other tools; read here)
//   images/<hex>                      the composefs images, with no ref: only the config's
//                                     named refs keep them through gc
// Stream refs are added in a fixed order (config, then layers in diff_id order, then the
// images), so the same image always gives the same stream objects.

import ComposeFS
import ComposeFSBase
import FsVerity
import Repository

public let configContentType = contentType("ociconfg")
public let manifestContentType = contentType("ocimanif")

/// The config stream's named refs to an image's composefs images.
public enum ImageRefName {
    /// The image in `format` (V0 and V1 share the V1 name; V0 is never stored).
    public static func image(_ format: FormatVersion) -> String { format == .v2 ? "composefs.image" : "composefs.image.v1" }

    /// The bootable image in `format` built with `xattrs`.
    public static func boot(_ format: FormatVersion, _ xattrs: XattrFilter) -> String {
        let base = format == .v2 ? bootPrefix : bootPrefix + ".v1"
        return xattrs == .allowlistOnly ? base : base + ".xattrs=" + xattrs.rawValue
    }

    /// Every bootable image's name starts so.
    static let bootPrefix = "composefs.image.boot"
}

extension FormatVersion {
    /// The format whose image a repository writing this one keeps (V0 has no stored form).
    var stored: FormatVersion { self == .v2 ? .v2 : .v1 }
}

public struct ImageStore: Sendable {
    public let repository: Repository

    public init(repository: Repository) { self.repository = repository }

    public static func layerStream(_ diffID: Digest) -> String { "oci-layer-\(diffID)" }
    static func configStream(_ digest: Digest) -> String { "oci-config-\(digest)" }
    public static func manifestStream(_ digest: Digest) -> String { "oci-manifest-\(digest)" }

    /// The format of the images the repository writes first (`repo.erofs_version()`).
    public var defaultFormat: FormatVersion { repository.imageFormats.first ?? .v1 }

    // MARK: Tags

    static func encodeTag(_ name: String) -> String {
        name.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F")
    }

    static func decodeTag(_ encoded: String) -> String {
        var result = ""
        var rest = Substring(encoded)
        while let percent = rest.firstIndex(of: "%") {
            result += rest[..<percent]
            let code = rest[percent...].prefix(3)
            if code == "%2F" { result += "/" } else if code == "%25" { result += "%" } else { result += code }
            rest = rest[rest.index(percent, offsetBy: code.count)...]
        }
        return result + rest
    }

    /// Points the tag at the manifest (which need not be stored, as in composefs-rs).
    public func tag(_ manifest: Digest, as name: String) throws(OCIError) {
        guard !name.isEmpty else { throw .badReference(name, reason: "empty tag name") }
        guard !name.hasPrefix("@") else {
            throw .badReference(name, reason: "leading '@' is reserved for digest references")
        }
        do { try repository.setStreamRef("oci/" + Self.encodeTag(name), to: Self.manifestStream(manifest)) } catch {
            throw .repository(error)
        }
    }

    public func untag(_ name: String) throws(OCIError) {
        do { try repository.removeStreamRef("oci/" + Self.encodeTag(name)) } catch .notFound {
            throw .notFound("tag '\(name)'")
        } catch { throw .repository(error) }
    }

    /// Every tag with the manifest it names, in directory order.
    public func tags() throws(OCIError) -> [(name: String, manifest: Digest)] {
        let refs: [(ref: String, stream: String)]
        do { refs = try repository.streamRefs(in: "oci") } catch { throw .repository(error) }
        return refs.compactMap { ref in
            guard let digestText = ref.stream.dropPrefix("oci-manifest-"), let digest = try? Digest(parsing: digestText) else {
                return nil
            }
            return (Self.decodeTag(ref.ref), digest)
        }
    }

    /// The manifest a tag names, which must be stored.
    public func resolve(tag name: String) throws(OCIError) -> Digest {
        guard let found = try tags().first(where: { $0.name == name }) else { throw .notFound("OCI reference '\(name)'") }
        guard repository.streamID(Self.manifestStream(found.manifest)) != nil else { throw .notFound("Manifest \(found.manifest)") }
        return found.manifest
    }

    // MARK: Referrers

    static func referrersDirectory(_ subject: Digest) -> String { "oci-referrers/" + encodeTag(subject.description) }

    /// The stored manifests recorded as naming `subject` as theirs.
    public func referrers(of subject: Digest) throws(OCIError) -> [Digest] {
        let refs: [(ref: String, stream: String)]
        do { refs = try repository.streamRefs(in: Self.referrersDirectory(subject)) } catch { throw .repository(error) }
        return refs.compactMap { ref in
            guard let digest = try? Digest(parsing: Self.decodeTag(ref.ref)), ref.stream == Self.manifestStream(digest),
                repository.streamID(ref.stream) != nil
            else { return nil }
            return digest
        }
    }

    // MARK: Writing

    /// Stores a layer's split stream under its diff_id.
    func storeLayer(_ stream: [UInt8], diffID: Digest) throws(OCIError) -> ObjectID {
        try repositoryCall { () throws(RepositoryError) in try repository.writeStream(stream, name: Self.layerStream(diffID)) }
    }

    /// A split stream holding `document` as its one object, with named refs in the given order.
    private func storeDocument(
        _ document: [UInt8], contentType: UInt64, refs: [(String, ObjectID)], name: String
    ) throws(OCIError) -> ObjectID {
        try repositoryCall { () throws(RepositoryError) in
            var writer = SplitStreamWriter(algorithm: repository.algorithm, contentType: contentType)
            for (refName, id) in refs { writer.addNamedStreamRef(refName, id) }
            writer.writeExternal(try repository.ensureObject(document), size: UInt64(document.count))
            return try repository.writeStream(try writer.finish(), name: name)
        }
    }

    /// The config stream: layers in diff_id order, then the V2 image, the V1 image and the
    /// bootable ones (by name; composefs-rs adds those in hash-map order).
    func storeConfig(
        _ bytes: [UInt8], digest: Digest, layers: [(diffID: Digest, stream: ObjectID)], images: ComposefsImages = ComposefsImages()
    ) throws(OCIError) -> ObjectID {
        var refs = layers.map { ($0.diffID.description, $0.stream) }
        if let v2 = images.v2 { refs.append((ImageRefName.image(.v2), v2)) }
        if let v1 = images.v1 { refs.append((ImageRefName.image(.v1), v1)) }
        refs += images.boot.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        return try storeDocument(bytes, contentType: configContentType, refs: refs, name: Self.configStream(digest))
    }

    /// The manifest stream: the config first, then the layers in diff_id order.
    func storeManifest(
        _ bytes: [UInt8], digest: Digest, config: (digest: Digest, stream: ObjectID), layers: [(diffID: Digest, stream: ObjectID)]
    ) throws(OCIError) -> ObjectID {
        let refs = [("config:\(config.digest)", config.stream)] + layers.map { ($0.diffID.description, $0.stream) }
        return try storeDocument(bytes, contentType: manifestContentType, refs: refs, name: Self.manifestStream(digest))
    }

    // MARK: Reading

    /// A stored document: its one object's bytes, its named refs and the stream's id.
    struct Document {
        var bytes: [UInt8]
        var refs: [String: ObjectID]
        var id: ObjectID
    }

    /// The document stream `streams/NAME`.
    func readDocument(_ name: String, contentType: UInt64) throws(OCIError) -> Document {
        guard let id = repository.streamID(name) else { throw .notFound("stream \(name)") }
        return try readDocument(id, contentType: contentType, what: "streams/" + name)
    }

    /// The document stream that is the object `id`.
    func readDocument(_ id: ObjectID, contentType: UInt64, what: String) throws(OCIError) -> Document {
        try repositoryCall { () throws(RepositoryError) in
            let stream = try SplitStream(try repository.readObject(id), algorithm: repository.algorithm)
            guard stream.contentType == contentType else { throw .corrupt(path: what, reason: "Invalid splitstream content type") }
            guard stream.references.objects.count == 1, let object = stream.references.objects.first else {
                throw .corrupt(
                    path: what, reason: "Expected exactly 1 external object in splitstream, got \(stream.references.objects.count)")
            }
            return Document(bytes: try repository.readObject(object), refs: stream.namedRefs, id: id)
        }
    }

    /// The config stream `id` (or, without one, streams/oci-config-DIGEST), its bytes checked
    /// against `digest`.
    func readConfig(_ digest: Digest, stream id: ObjectID?) throws(OCIError) -> (document: Document, config: ImageConfig) {
        let document =
            if let id {
                try readDocument(id, contentType: configContentType, what: "config stream \(id.hex)")
            } else {
                try readDocument(Self.configStream(digest), contentType: configContentType)
            }
        let actual = digest.computed(over: document.bytes)
        guard actual == digest else { throw .digestMismatch(what: "config", expected: digest.description, actual: actual.description) }
        return (document, try Documents.decode(ImageConfig.self, document.bytes, what: "config \(digest)"))
    }

    /// A stored image by manifest digest, its manifest and config checked against their digests.
    public func open(manifest digest: Digest) throws(OCIError) -> StoredImage {
        let manifest = try readDocument(Self.manifestStream(digest), contentType: manifestContentType)
        let actual = digest.computed(over: manifest.bytes)
        guard actual == digest else { throw .digestMismatch(what: "manifest", expected: digest.description, actual: actual.description) }
        guard case let .manifest(parsed) = try Documents.manifestDocument(manifest.bytes, mediaType: nil, what: "manifest \(digest)") else {
            throw .badDocument(what: "manifest \(digest)", reason: "is an index, not an image manifest")
        }
        guard let configStream = manifest.refs["config:\(parsed.config.digest)"] else {
            throw .badDocument(what: "manifest \(digest)", reason: "Manifest missing config reference")
        }
        let (config, configParsed) = try readConfig(parsed.config.digest, stream: configStream)
        var refs = config.refs
        let v2 = refs.removeValue(forKey: ImageRefName.image(.v2))
        let v1 = refs.removeValue(forKey: ImageRefName.image(.v1))
        let boot = refs.filter { $0.key.hasPrefix(ImageRefName.bootPrefix) }
        return StoredImage(
            manifestDigest: digest, manifestBytes: manifest.bytes, manifest: parsed, manifestStream: manifest.id,
            configBytes: config.bytes, config: configParsed, configStream: configStream,
            layerRefs: refs.filter { !$0.key.hasPrefix(ImageRefName.bootPrefix) },
            images: ComposefsImages(v2: v2, v1: v1, boot: boot))
    }

    /// A stored image by tag or manifest digest.
    public func open(_ reference: OCIReference) throws(OCIError) -> StoredImage {
        switch reference {
        case let .digest(digest): try open(manifest: digest)
        case let .named(name): try open(manifest: try resolve(tag: name))
        }
    }
}

/// How commands name a stored image: a tag, or "@sha256:…".
public enum OCIReference: Sendable, CustomStringConvertible {
    case named(String)
    case digest(Digest)

    public init(parsing text: String) throws(OCIError) {
        if let digest = text.dropPrefix("@") {
            do { self = .digest(try Digest(parsing: digest)) } catch {
                throw .badReference(text, reason: "Invalid OCI digest after '@': \(error)")
            }
        } else {
            self = .named(text)
        }
    }

    public var description: String {
        switch self {
        case let .named(name): name
        case let .digest(digest): "@\(digest)"
        }
    }
}

/// The composefs images a config stream names.
public struct ComposefsImages: Sendable {
    /// composefs.image
    public var v2: ObjectID?
    /// composefs.image.v1
    public var v1: ObjectID?
    /// The bootable images, by named ref.
    public var boot: [String: ObjectID]

    public init(v2: ObjectID? = nil, v1: ObjectID? = nil, boot: [String: ObjectID] = [:]) {
        self.v2 = v2
        self.v1 = v1
        self.boot = boot
    }
}

/// An image read back from the repository.
public struct StoredImage: Sendable {
    public let manifestDigest: Digest
    public let manifestBytes: [UInt8]
    public let manifest: Manifest
    public let manifestStream: ObjectID
    public let configBytes: [UInt8]
    public let config: ImageConfig
    /// The config stream the manifest stream names.
    public let configStream: ObjectID
    /// The layer streams by diff_id (the config's other named refs).
    public let layerRefs: [String: ObjectID]
    public let images: ComposefsImages

    /// The layer streams in diff_id order.
    public func layers() throws(OCIError) -> [(diffID: Digest, stream: ObjectID)] {
        try config.layerStreams(in: layerRefs, config: manifest.config.digest)
    }

    /// The composefs image in `format` (no fallback to another format).
    public func imageID(_ format: FormatVersion) -> ObjectID? { format == .v2 ? images.v2 : images.v1 }

    /// The bootable image in `format` built with `xattrs`.
    public func bootImageID(_ format: FormatVersion, xattrs: XattrFilter = .allowlistOnly) -> ObjectID? {
        images.boot[ImageRefName.boot(format, xattrs)]
    }
}

extension ImageConfig {
    /// The layer streams a config stream's named refs give the diff_ids, in diff_id order.
    func layerStreams(in refs: [String: ObjectID], config digest: Digest) throws(OCIError) -> [(diffID: Digest, stream: ObjectID)] {
        var layers: [(diffID: Digest, stream: ObjectID)] = []
        for diffID in rootfs.diff_ids {
            guard let stream = refs[diffID.description] else {
                throw .badDocument(what: "config \(digest)", reason: "no named ref to layer \(diffID)")
            }
            layers.append((diffID, stream))
        }
        return layers
    }
}

extension ImageStore {
    /// Stores a tar (possibly compressed) read from `fd` as the layer `diffID`, which its
    /// content must match; a layer already stored is not read again.
    public func importLayer(fromFileDescriptor fd: Int32, diffID: Digest, ref: String?) throws(OCIError) -> ObjectID {
        let name = Self.layerStream(diffID)
        let id: ObjectID
        if let existing = repository.streamID(name) {
            id = existing
        } else {
            let result = try LayerImporter.importLayer(from: DescriptorSource(fd: fd), into: repository, layer: diffID.description)
            guard result.diffID == diffID else {
                throw .digestMismatch(what: "layer (uncompressed)", expected: diffID.description, actual: result.diffID.description)
            }
            id = try storeLayer(result.stream, diffID: diffID)
        }
        if let ref {
            do { try repository.setStreamRef(ref, to: name) } catch { throw .repository(error) }
        }
        return id
    }
}
