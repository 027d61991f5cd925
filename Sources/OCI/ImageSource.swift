// Where images come from, with skopeo's transport syntax:
//   oci:DIR[:REF]              an OCI image layout directory (REF: the ref.name annotation)
//   oci-archive:FILE[:REF]     the same, as an (uncompressed) tar file
//   docker-archive:FILE[:REF]  `docker save` output (REF: a RepoTag, or @INDEX)
//   docker://HOST[:PORT]/NAME[:TAG|@DIGEST]   a registry (Registry.swift)
// A source answers for documents by digest and hands out blobs as readable file ranges.

import ComposeFSBase
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A blob ready to be read: a range of an open file.
public struct BlobFile: Sendable {
    let file: FileDescriptor
    let path: String
    let offset: UInt64
    let length: UInt64

    func source() -> FileRangeSource { FileRangeSource(fd: file.raw, path: path, offset: offset, length: length) }

    /// The whole blob in memory (for manifests and configs, whose size is bounded).
    func bytes(limit: Int) throws(OCIError) -> [UInt8] {
        guard length <= UInt64(limit) else { throw .badDocument(what: path, reason: "larger than \(limit) bytes") }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        var source = source()
        let n = try withMutableBytes(&bytes) { (buffer) throws(OCIError) in try source.readFully(into: buffer) }
        guard n == bytes.count else { throw .transfer(what: path, reason: "file is truncated") }
        return bytes
    }
}

/// Limits on documents, which are read whole.
enum DocumentLimits {
    static let manifestMax = 4 << 20
    static let configMax = 16 << 20
}

/// A source of one image.
public protocol ImageSource: Sendable {
    /// The manifest (or index) the reference names: its bytes and media type, and the digest
    /// it must have when the reference pins one.
    func rootDocument() async throws(OCIError) -> (bytes: [UInt8], mediaType: String?, pinned: Digest?)
    /// A manifest named by an index.
    func manifest(_ descriptor: Descriptor) async throws(OCIError) -> [UInt8]
    /// A blob; its digest is checked by the caller while it is read.
    func blob(_ descriptor: Descriptor, progress: (@Sendable (UInt64) -> Void)?) async throws(OCIError) -> BlobFile
    /// Whether blobs are named by the digest of their bytes (not so in docker archives, whose
    /// layers are known only by diff_id).
    var verifiesBlobDigests: Bool { get }
    /// Whether `blob` downloads (and reports progress itself) rather than opening a local file.
    var stagesBlobs: Bool { get }
    /// Whether this is an OCI layout directory, which composefs-rs reads itself (everything
    /// else goes through skopeo) and whose pulls it reports in other words.
    var isLayoutDirectory: Bool { get }
}

extension ImageSource {
    public var verifiesBlobDigests: Bool { true }
    public var stagesBlobs: Bool { false }
    public var isLayoutDirectory: Bool { false }
}

/// Parses a transport reference.
public enum ImageReference {
    public static func source(_ reference: String, options: RegistryOptions) throws(OCIError) -> any ImageSource {
        if let rest = reference.dropPrefix("oci:") {
            let (path, ref) = splitPathAndReference(rest)
            return try LayoutSource(directory: path, reference: ref)
        }
        if let rest = reference.dropPrefix("oci-archive:") {
            let (path, ref) = splitPathAndReference(rest)
            return try LayoutSource(archive: path, reference: ref)
        }
        if let rest = reference.dropPrefix("docker-archive:") {
            let (path, ref) = splitPathAndReference(rest)
            return try DockerArchiveSource(path: path, reference: ref)
        }
        if let rest = reference.dropPrefix("docker://") {
            return try RegistrySource(reference: rest, options: options)
        }
        throw .badReference(reference, reason: "expected oci:, oci-archive:, docker-archive: or docker:// transport")
    }

    /// "PATH[:REF]": the path is everything before the last ':' that is followed by no '/'.
    static func splitPathAndReference(_ text: String) -> (String, String?) {
        guard let colon = text.lastIndex(of: ":"), !text[text.index(after: colon)...].contains("/") else { return (text, nil) }
        let reference = String(text[text.index(after: colon)...])
        return (String(text[..<colon]), reference.isEmpty ? nil : reference)
    }
}

extension String {
    func dropPrefix(_ prefix: String) -> String? {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil
    }
}

// MARK: OCI layouts, as directories and as tar archives

/// The files of a layout: either a directory, or members of an archive.
private enum LayoutStorage: Sendable {
    case directory(String)
    case archive(path: String, members: [String: (offset: UInt64, size: UInt64)])

    func open(_ relative: String) throws(OCIError) -> BlobFile {
        switch self {
        case let .directory(root):
            let path = root + "/" + relative
            let file: FileDescriptor
            do throws(SystemError) { file = try FileDescriptor.open(path, O_RDONLY) } catch {
                if error.code == ENOENT { throw .notFound(path) }
                throw .system(error)
            }
            let size = try systemCall { () throws(SystemError) in try file.status() }.st_size
            return BlobFile(file: file, path: path, offset: 0, length: UInt64(size))
        case let .archive(path, members):
            guard let member = members[relative] else { throw .notFound("\(relative) in \(path)") }
            let file = try systemCall { () throws(SystemError) in try FileDescriptor.open(path, O_RDONLY) }
            return BlobFile(file: file, path: "\(path):\(relative)", offset: member.offset, length: member.size)
        }
    }
}

struct LayoutSource: ImageSource {
    private let storage: LayoutStorage
    private let reference: String?
    private let name: String

    init(directory: String, reference: String?) throws(OCIError) {
        storage = .directory(directory)
        self.reference = reference
        name = directory
        try checkLayoutFile()
    }

    var isLayoutDirectory: Bool {
        if case .directory = storage { return true }
        return false
    }

    init(archive: String, reference: String?) throws(OCIError) {
        storage = .archive(path: archive, members: try ArchiveIndex.members(of: archive))
        self.reference = reference
        name = archive
        try checkLayoutFile()
    }

    private func checkLayoutFile() throws(OCIError) {
        struct LayoutFile: Decodable { var imageLayoutVersion: String }
        let bytes = try storage.open("oci-layout").bytes(limit: 1 << 16)
        let layout = try Documents.decode(LayoutFile.self, bytes, what: "\(name)/oci-layout")
        guard layout.imageLayoutVersion.hasPrefix("1.") else {
            throw .unsupported("\(name): unsupported image layout version \(layout.imageLayoutVersion)")
        }
    }

    func rootDocument() async throws(OCIError) -> (bytes: [UInt8], mediaType: String?, pinned: Digest?) {
        let indexBytes = try storage.open("index.json").bytes(limit: DocumentLimits.manifestMax)
        let index = try Documents.decode(ImageIndex.self, indexBytes, what: "\(name)/index.json")
        let chosen: Descriptor
        if let reference {
            let matches = index.manifests.filter { $0.annotations?["org.opencontainers.image.ref.name"] == reference }
            guard let match = matches.first else { throw .notFound("image '\(reference)' in \(name)") }
            guard matches.count == 1 else { throw .badReference(reference, reason: "several images in \(name) have this name") }
            chosen = match
        } else {
            guard index.manifests.count == 1, let only = index.manifests.first else {
                throw .badReference(name, reason: "the layout holds \(index.manifests.count) images; name one as oci:DIR:NAME")
            }
            chosen = only
        }
        return (try await manifest(chosen), chosen.mediaType, chosen.digest)
    }

    func manifest(_ descriptor: Descriptor) async throws(OCIError) -> [UInt8] {
        try blobFile(descriptor).bytes(limit: DocumentLimits.manifestMax)
    }

    func blob(_ descriptor: Descriptor, progress: (@Sendable (UInt64) -> Void)?) async throws(OCIError) -> BlobFile {
        try blobFile(descriptor)
    }

    private func blobFile(_ descriptor: Descriptor) throws(OCIError) -> BlobFile {
        let file = try storage.open("blobs/\(descriptor.digest.algorithm)/\(descriptor.digest.hex)")
        guard file.length == UInt64(descriptor.size) else {
            throw .badDocument(
                what: "blob \(descriptor.digest)", reason: "size is \(file.length) bytes, descriptor says \(descriptor.size)")
        }
        return file
    }
}

/// The members of an uncompressed tar archive, by path (leading "./" removed).
package enum ArchiveIndex {
    package static func members(of path: String) throws(OCIError) -> [String: (offset: UInt64, size: UInt64)] {
        let file: FileDescriptor
        do throws(SystemError) { file = try FileDescriptor.open(path, O_RDONLY) } catch {
            if error.code == ENOENT { throw .notFound(path) }
            throw .system(error)
        }
        let size = UInt64(try systemCall { () throws(SystemError) in try file.status() }.st_size)
        var walker = TarWalker(ArchiveFile(file: file, size: size), layer: path)
        var members: [String: (offset: UInt64, size: UInt64)] = [:]
        while let (entry, offset) = try walker.next() {
            guard entry.kind == .regular else { continue }
            var name = String(decoding: entry.path, as: UTF8.self)
            while name.hasPrefix("./") { name.removeFirst(2) }
            while name.hasPrefix("/") { name.removeFirst() }
            members[name] = (offset, entry.dataSize)
        }
        return members
    }

    /// An archive on disk, read in place: each entry's data is only located, never read.
    private struct ArchiveFile: TarInput {
        let file: FileDescriptor
        let size: UInt64
        var offset: UInt64 = 0

        mutating func readRecord(into buffer: UnsafeMutableRawBufferPointer, decoder: TarHeaderDecoder) throws(OCIError) -> Int {
            let read = try systemCall { () throws(SystemError) in try preadAll(file.raw, into: buffer, at: offset, path: file.path) }
            offset += UInt64(read)
            return read
        }

        /// Where the entry's data starts.
        mutating func consumeData(of entry: TarEntry, padding: UInt64, decoder: TarHeaderDecoder) throws(OCIError) -> UInt64 {
            guard entry.sparseMap == nil else { throw decoder.fail("sparse members are not supported in image archives") }
            let start = offset
            guard entry.dataSize <= size - min(offset, size) else { throw decoder.fail("archive is truncated") }
            offset += entry.dataSize + padding
            return start
        }
    }
}

// MARK: docker save archives

/// `docker save` output: manifest.json lists, per image, the config file and the layer files.
/// A schema 2 manifest is made up for it (as skopeo does), so it is stored like any other image.
struct DockerArchiveSource: ImageSource {
    private let path: String
    private let members: [String: (offset: UInt64, size: UInt64)]
    private let manifestBytes: [UInt8]
    private let layerFiles: [Digest: String]
    private let configFile: (digest: Digest, member: String)

    init(path: String, reference: String?) throws(OCIError) {
        self.path = path
        members = try ArchiveIndex.members(of: path)
        let storage = LayoutStorage.archive(path: path, members: members)
        struct Item: Decodable {
            var Config: String
            var RepoTags: [String]?
            var Layers: [String]
        }
        let items = try Documents.decode(
            [Item].self, try storage.open("manifest.json").bytes(limit: DocumentLimits.manifestMax), what: "\(path):manifest.json")
        let item: Item
        if let reference, let index = reference.dropPrefix("@").flatMap({ Int($0) }) {
            guard items.indices.contains(index) else { throw .notFound("image @\(index) in \(path)") }
            item = items[index]
        } else if let reference {
            let wanted = reference.contains(":") ? reference : reference + ":latest"
            guard let match = items.first(where: { ($0.RepoTags ?? []).contains { $0 == wanted || $0.hasSuffix("/" + wanted) } }) else {
                throw .notFound("image '\(reference)' in \(path)")
            }
            item = match
        } else {
            guard items.count == 1, let only = items.first else {
                throw .badReference(path, reason: "the archive holds \(items.count) images; name one as docker-archive:FILE:NAME")
            }
            item = only
        }
        let configBytes = try storage.open(item.Config).bytes(limit: DocumentLimits.configMax)
        let config = try Documents.decode(ImageConfig.self, configBytes, what: "\(path):\(item.Config)")
        guard config.rootfs.diff_ids.count == item.Layers.count else {
            throw .badDocument(what: "\(path):manifest.json", reason: "\(item.Layers.count) layers but the config lists \(config.rootfs.diff_ids.count)")
        }
        let configDigest = Digest.sha256(configBytes)
        configFile = (configDigest, item.Config)
        // The layer files are the uncompressed tars, so each one's digest is its diff_id.
        var layers: [Descriptor] = []
        var files: [Digest: String] = [:]
        for (file, diffID) in zip(item.Layers, config.rootfs.diff_ids) {
            guard let member = members[file] else { throw .notFound("\(file) in \(path)") }
            layers.append(Descriptor(mediaType: MediaType.dockerLayer, digest: diffID, size: Int64(member.size)))
            files[diffID] = file
        }
        layerFiles = files
        let manifest = Manifest(
            schemaVersion: 2, mediaType: MediaType.dockerManifest, artifactType: nil,
            config: Descriptor(mediaType: MediaType.dockerConfig, digest: configDigest, size: Int64(configBytes.count)),
            layers: layers)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(manifest) else { throw .badDocument(what: path, reason: "cannot encode a manifest") }
        manifestBytes = Array(data)
    }

    var verifiesBlobDigests: Bool { false }

    func rootDocument() async throws(OCIError) -> (bytes: [UInt8], mediaType: String?, pinned: Digest?) {
        (manifestBytes, MediaType.dockerManifest, nil)
    }

    func manifest(_ descriptor: Descriptor) async throws(OCIError) -> [UInt8] {
        throw .notFound("manifest \(descriptor.digest) in \(path)")
    }

    func blob(_ descriptor: Descriptor, progress: (@Sendable (UInt64) -> Void)?) async throws(OCIError) -> BlobFile {
        let storage = LayoutStorage.archive(path: path, members: members)
        if descriptor.digest == configFile.digest { return try storage.open(configFile.member) }
        guard let file = layerFiles[descriptor.digest] else { throw .notFound("blob \(descriptor.digest) in \(path)") }
        return try storage.open(file)
    }
}
