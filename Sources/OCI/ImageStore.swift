// OCI images in a repository, in composefs-rs's layout (doc/oci.md):
//   streams/oci-layer-<diff_id>       a layer's tar as a split stream ("ocilayer")
//   streams/oci-config-<digest>       the config JSON as one object ("ociconfg"); named refs
//                                     <diff_id> → layer stream, composefs.image → the EROFS image
//   streams/oci-manifest-<digest>     the manifest JSON as one object ("ocimanif"); named refs
//                                     config:<digest> → config stream, <diff_id> → layer stream
//   streams/refs/oci/<tag>            → ../../oci-manifest-<digest> ('%' → %25, '/' → %2F)
//   streams/refs/oci-referrers/<subject digest>/<digest>
//                                     → the manifest stream of an image whose manifest names
//                                       <subject digest> as its subject
// Stream refs are added in a fixed order (config, then layers bottom up, then the image), so the
// same image always gives the same stream objects.

import ComposeFS
import ComposeFSBase
import FsVerity
import Repository

public let configContentType = contentType("ociconfg")
public let manifestContentType = contentType("ocimanif")
/// The named ref from a config stream to its composefs image.
public let imageRefName = "composefs.image"

public struct ImageStore: Sendable {
    public let repository: Repository

    public init(repository: Repository) { self.repository = repository }

    static func layerStream(_ diffID: Digest) -> String { "oci-layer-\(diffID)" }
    static func configStream(_ digest: Digest) -> String { "oci-config-\(digest)" }
    static func manifestStream(_ digest: Digest) -> String { "oci-manifest-\(digest)" }

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

    // MARK: Referrers

    static func referrersDirectory(_ subject: Digest) -> String { "oci-referrers/" + encodeTag(subject.description) }

    /// Records that the manifest `digest` refers to `subject`.
    func addReferrer(_ digest: Digest, subject: Digest) throws(OCIError) {
        let ref = Self.referrersDirectory(subject) + "/" + Self.encodeTag(digest.description)
        do { try repository.setStreamRef(ref, to: Self.manifestStream(digest)) } catch { throw .repository(error) }
    }

    /// The stored manifests that name `subject` as theirs.
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

    /// A tag name, or "@sha256:…" for a manifest digest.
    public func resolve(_ reference: String) throws(OCIError) -> Digest {
        if let digestText = reference.dropPrefix("@") {
            return try Digest(parsing: digestText)
        }
        guard let found = try tags().first(where: { $0.name == reference }) else { throw .notFound("image '\(reference)'") }
        return found.manifest
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

    func storeConfig(_ bytes: [UInt8], digest: Digest, layers: [(diffID: Digest, stream: ObjectID)], image: ObjectID?) throws(OCIError) -> ObjectID {
        var refs = layers.map { ($0.diffID.description, $0.stream) }
        if let image { refs.append((imageRefName, image)) }
        return try storeDocument(bytes, contentType: configContentType, refs: refs, name: Self.configStream(digest))
    }

    func storeManifest(
        _ bytes: [UInt8], digest: Digest, config: (digest: Digest, stream: ObjectID), layers: [(diffID: Digest, stream: ObjectID)]
    ) throws(OCIError) -> ObjectID {
        let refs = [("config:\(config.digest)", config.stream)] + layers.map { ($0.diffID.description, $0.stream) }
        return try storeDocument(bytes, contentType: manifestContentType, refs: refs, name: Self.manifestStream(digest))
    }

    // MARK: Reading

    /// A stored document stream: its one object's bytes and its named refs.
    func readDocument(_ name: String, contentType: UInt64) throws(OCIError) -> (bytes: [UInt8], refs: [String: ObjectID], id: ObjectID) {
        try repositoryCall { () throws(RepositoryError) in
            guard let id = repository.streamID(name) else { throw .notFound("stream \(name)") }
            let stream = try repository.openStream(name)
            guard stream.contentType == contentType else {
                throw .corrupt(path: "streams/" + name, reason: "Invalid splitstream content type")
            }
            guard stream.references.objects.count == 1, let object = stream.references.objects.first else {
                throw .corrupt(
                    path: "streams/" + name, reason: "Expected exactly 1 external object in splitstream, got \(stream.references.objects.count)")
            }
            return (try repository.readObject(object), stream.namedRefs, id)
        }
    }

    /// An image as stored, every document checked against its digest.
    public func open(manifest digest: Digest) throws(OCIError) -> StoredImage {
        let manifest = try readDocument(Self.manifestStream(digest), contentType: manifestContentType)
        let actual = digest.computed(over: manifest.bytes)
        guard actual == digest else { throw .digestMismatch(what: "manifest", expected: digest.description, actual: actual.description) }
        guard case let .manifest(parsed) = try Documents.manifestDocument(manifest.bytes, mediaType: nil, what: "manifest \(digest)") else {
            throw .badDocument(what: "manifest \(digest)", reason: "is an index, not an image manifest")
        }
        guard manifest.refs["config:\(parsed.config.digest)"] != nil else {
            throw .badDocument(what: "manifest \(digest)", reason: "Manifest missing config reference")
        }
        let config = try readDocument(Self.configStream(parsed.config.digest), contentType: configContentType)
        let configActual = parsed.config.digest.computed(over: config.bytes)
        guard configActual == parsed.config.digest else {
            throw .digestMismatch(what: "config", expected: parsed.config.digest.description, actual: configActual.description)
        }
        let configParsed = try Documents.decode(ImageConfig.self, config.bytes, what: "config \(parsed.config.digest)")
        var layers: [(diffID: Digest, stream: ObjectID)] = []
        for diffID in configParsed.rootfs.diff_ids {
            guard let stream = config.refs[diffID.description] else {
                throw .badDocument(what: "config \(parsed.config.digest)", reason: "missing named ref to layer \(diffID)")
            }
            layers.append((diffID, stream))
        }
        return StoredImage(
            manifestDigest: digest, manifestBytes: manifest.bytes, manifest: parsed, manifestStream: manifest.id,
            configBytes: config.bytes, config: configParsed, configStream: config.id, layers: layers,
            imageID: config.refs[imageRefName])
    }

    // MARK: The composefs image

    /// The merged root file system of the layers (bottom first).
    func rootfs(layers: [(diffID: Digest, stream: ObjectID)], storeExpanded: Bool) throws(OCIError) -> Inode {
        let repository = self.repository
        var rootfs = Rootfs(algorithm: repository.algorithm) { (entry, content) throws(OCIError) in
            try SparseFiles.expand(entry, content, repository: repository, store: storeExpanded)
        }
        for layer in layers {
            let name = Self.layerStream(layer.diffID)
            let stream: SplitStream
            do { stream = try repository.openStream(name) } catch { throw .repository(error) }
            try rootfs.apply(try LayerReader.entries(of: stream, layer: layer.diffID.description), layer: layer.diffID.description)
        }
        return rootfs.root
    }

    /// The EROFS image of the layers.
    func buildImage(layers: [(diffID: Digest, stream: ObjectID)], storeExpanded: Bool) throws(OCIError) -> [UInt8] {
        let root = try rootfs(layers: layers, storeExpanded: storeExpanded)
        do { return try ImageWriter.image(root: root) } catch { throw .imageWrite(error) }
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
    public let configStream: ObjectID
    public let layers: [(diffID: Digest, stream: ObjectID)]
    /// The composefs image built at pull time.
    public let imageID: ObjectID?
}

extension ImageStore {
    /// The composefs image of a stored image (built anew from its layers).
    public func composefsImage(of manifest: Digest, store: Bool) throws(OCIError) -> [UInt8] {
        try buildImage(layers: try open(manifest: manifest).layers, storeExpanded: store)
    }

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
