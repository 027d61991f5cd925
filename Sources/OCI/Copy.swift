// Copying an image from another repository (`cfsctl oci copy`), as composefs-rs 0.9 does it
// over its varlink API: every layer this repository lacks is imported from the tar the source
// gives back (so the two may use different fs-verity algorithms), then the config and manifest
// streams are written unless stored, the composefs images are made unless recorded, and the
// image is tagged. Zero-copy takes the layers' streams as they are, their objects reflinked
// or hard-linked.

import ComposeFSBase
import FsVerity
import Repository

public struct CopyResult: Sendable {
    public var manifestDigest: Digest
    /// The manifest and config streams as they are after the copy.
    public var manifestStream: ObjectID
    public var configDigest: Digest
    public var configStream: ObjectID
}

extension ImageStore {
    /// With `zeroCopy` (both repositories on one file system, same algorithm) the layers'
    /// streams are taken as they are and their objects reflinked or hard-linked, never copied.
    public func copy(_ reference: OCIReference, from source: ImageStore, name: String?, zeroCopy: Bool = false) throws(OCIError) -> CopyResult {
        let image = try source.open(reference)
        var layers: [(diffID: Digest, stream: ObjectID)] = []
        for (diffID, sourceStream) in try image.layers() {
            if let stored = repository.streamID(Self.layerStream(diffID)) {
                layers.append((diffID, stored))
                continue
            }
            let streamBytes = try repositoryCall { () throws(RepositoryError) in try source.repository.readObject(sourceStream) }
            let stream = try repositoryCall { () throws(RepositoryError) in
                try SplitStream(streamBytes, algorithm: source.repository.algorithm)
            }
            if zeroCopy {
                try repositoryCall { () throws(RepositoryError) in
                    try stream.forEachChunk { (chunk) throws(RepositoryError) in
                        if case let .external(id) = chunk { try repository.adoptObject(id, from: source.repository) }
                    }
                }
                layers.append((diffID, try storeLayer(streamBytes, diffID: diffID)))
                continue
            }
            let tar = try SplitStreamSource(stream, repository: source.repository)
            let imported = try LayerImporter.importLayer(from: tar, into: repository, layer: diffID.description)
            guard imported.diffID == diffID else {
                throw .digestMismatch(what: "layer \(diffID) of \(source.repository.path)", expected: diffID.description, actual: imported.diffID.description)
            }
            layers.append((diffID, try storeLayer(imported.stream, diffID: diffID)))
        }
        let configDigest = image.manifest.config.digest
        let configStream: ObjectID
        if let stored = repository.streamID(Self.configStream(configDigest)) {
            configStream = stored
        } else {
            configStream = try storeConfig(image.configBytes, digest: configDigest, layers: layers)
        }
        if repository.streamID(Self.manifestStream(image.manifestDigest)) == nil {
            _ = try storeManifest(image.manifestBytes, digest: image.manifestDigest, config: (configDigest, configStream), layers: layers)
        }
        if try open(manifest: image.manifestDigest).imageID(defaultFormat.stored) == nil {
            try makeImages(manifest: image.manifestDigest, tag: name)
        } else if let name {
            try tag(image.manifestDigest, as: name)
        }
        // Making the images rewrote both streams.
        guard let manifestStream = repository.streamID(Self.manifestStream(image.manifestDigest)),
            let finalConfig = repository.streamID(Self.configStream(configDigest))
        else { throw .notFound("the streams of \(image.manifestDigest) after the copy") }
        return CopyResult(
            manifestDigest: image.manifestDigest, manifestStream: manifestStream, configDigest: configDigest, configStream: finalConfig)
    }
}

/// The bytes a split stream stands for, its objects read as they come.
private struct SplitStreamSource: ByteSource {
    let repository: Repository
    var pieces: [SplitStream.Chunk] = []
    var index = 0
    var offset = 0
    var object: FileDescriptor?

    init(_ stream: SplitStream, repository: Repository) throws(OCIError) {
        self.repository = repository
        var pieces: [SplitStream.Chunk] = []
        try repositoryCall { () throws(RepositoryError) in
            try stream.forEachChunk { (chunk) throws(RepositoryError) in pieces.append(chunk) }
        }
        self.pieces = pieces
    }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(OCIError) -> Int {
        while index < pieces.count {
            switch pieces[index] {
            case let .inline(bytes):
                let count = min(buffer.count, bytes.count - offset)
                if count > 0 {
                    bytes[(bytes.startIndex + offset)...].prefix(count).withUnsafeBytes {
                        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[..<count]))
                    }
                    offset += count
                    return count
                }
            case let .external(id):
                if object == nil { object = try repositoryCall { () throws(RepositoryError) in try repository.openObject(id) } }
                guard let file = object else { return 0 }
                let count = try systemCall { () throws(SystemError) in try readSome(file.raw, into: buffer, path: file.path) }
                if count > 0 { return count }
                object = nil
            }
            index += 1
            offset = 0
        }
        return 0
    }
}
