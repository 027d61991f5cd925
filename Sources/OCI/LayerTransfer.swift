// Layers moved between repositories as composefs-rs 0.9 moves them (varlink's GetLayer and
// PutLayer, and `cfsctl oci copy`): the sender describes a stored layer as splitdirfdstream
// chunks, its objects named below its objects/ directory; the receiver rebuilds the layer's
// split stream from them in its own algorithm, storing each object by reflink, hard link or
// copy, and keeps it only if the tar it stands for hashes to the layer's diff_id.

import ComposeFSBase
import Crypto
import FsVerity
import Repository

#if canImport(Glibc)
import Glibc
#endif

/// How the objects of a received layer were stored (PutLayer's counters).
public struct TransferStatistics: Sendable, Equatable {
    public var reflinked = 0
    public var hardlinked = 0
    public var copied = 0
    public var alreadyPresent = 0

    public init() {}

    mutating func count(_ method: ObjectStoreMethod) {
        switch method {
        case .reflinked: reflinked += 1
        case .hardlinked: hardlinked += 1
        case .copied: copied += 1
        case .alreadyPresent: alreadyPresent += 1
        }
    }
}

public struct ReceivedLayer: Sendable {
    /// The layer's split stream, stored as streams/oci-layer-<diff_id>.
    public var stream: ObjectID
    public var statistics: TransferStatistics
}

public enum LayerTransferError: Error, CustomStringConvertible {
    /// The tar the chunks stand for is not the one the diff_id names; nothing was kept.
    case diffIDMismatch(expected: Digest, actual: Digest)
    case stream(SplitdirfdError)
    /// A FileBackedData chunk naming something that cannot be read as a layer's file.
    case badFileReference(directory: UInt32, name: String, reason: String)
    case failed(OCIError)

    public var description: String {
        switch self {
        case let .diffIDMismatch(expected, actual):
            "layer content does not match declared diff_id: expected \(expected), got \(actual)"
        case let .stream(error):
            error.description
        case let .badFileReference(directory, name, reason):
            "splitdirfdstream: file \"\(name)\" of directory \(directory): \(reason)"
        case let .failed(error):
            error.description
        }
    }
}

/// SHA-256 of a layer's tar as its pieces are stored: the diff_id it must have.
private struct DiffIDHasher: ContentInspector {
    var hasher = SHA256()

    mutating func update(_ bytes: UnsafeRawBufferPointer) { hasher.update(bufferPointer: bytes) }

    mutating func update(_ bytes: [UInt8]) { hasher.update(data: bytes) }

    var digest: Digest { Digest(uncheckedAlgorithm: "sha256", hex: Hex.encode(hasher.finalize())) }
}

extension ImageStore {
    /// The layer split stream `stream` as splitdirfdstream chunks: its inline bytes as
    /// Metadata, each object as FileBackedData naming it (`xx/yyyy…`) below objects/, which
    /// the receiver is handed as directory `objectsIndex`.
    public func transferChunks(ofLayerStream stream: ObjectID, objectsIndex: UInt32) throws(OCIError) -> [SplitdirfdChunk] {
        var pieces: [SplitStream.Chunk] = []
        try repositoryCall { () throws(RepositoryError) in
            let split = try SplitStream(try repository.readObject(stream), algorithm: repository.algorithm)
            try split.forEachChunk { (chunk) throws(RepositoryError) in pieces.append(chunk) }
        }
        var chunks: [SplitdirfdChunk] = []
        for piece in pieces {
            switch piece {
            case let .inline(bytes):
                // A body is at most 256 MiB; the receiver joins consecutive ones again.
                var rest = bytes[...]
                while !rest.isEmpty {
                    chunks.append(.metadata(Array(rest.prefix(SplitdirfdChunk.maximumBodySize))))
                    rest = rest.dropFirst(SplitdirfdChunk.maximumBodySize)
                }
            case let .external(id):
                let object = try repositoryCall { () throws(RepositoryError) in try repository.openObject(id) }
                let size = try systemCall { () throws(SystemError) in try object.status() }.st_size
                chunks.append(.fileBacked(directory: objectsIndex, length: UInt64(size), name: Array(id.objectPath.utf8)))
            }
        }
        return chunks
    }

    /// Stores the layer `diffID` from splitdirfdstream chunks whose files are named below
    /// `directories` (by index): its split stream rebuilt in this repository's algorithm,
    /// files of more than 64 bytes as objects (reflinked, else hard-linked, else copied unless
    /// `zeroCopy`). The stream is kept only if the tar hashes to `diffID`; the objects of a
    /// refused layer are left for gc.
    public func receiveLayer(
        _ diffID: Digest, from source: inout some SplitdirfdChunkSource, directories: [FileDescriptor], zeroCopy: Bool
    ) throws(LayerTransferError) -> ReceivedLayer {
        guard diffID.algorithm == "sha256" else {
            throw .failed(.unsupported("unsupported diff_id algorithm \"\(diffID.algorithm)\": only sha256 is supported"))
        }
        var writer = SplitStreamWriter(algorithm: repository.algorithm, contentType: layerContentType)
        var hasher = DiffIDHasher()
        var statistics = TransferStatistics()
        var context = ImportContext()
        while true {
            let next: SplitdirfdChunk?
            do { next = try source.nextChunk() } catch { throw .stream(error) }
            guard let chunk = next else { break }
            switch chunk {
            case let .metadata(bytes):
                hasher.update(bytes)
                writer.writeInline(bytes)
            case let .inlineData(bytes):
                hasher.update(bytes)
                if UInt64(bytes.count) <= LayerImporter.inlineMax {
                    writer.writeInline(bytes)
                } else {
                    let stored = try failing { () throws(RepositoryError) in try repository.storeObject(bytes) }
                    statistics.count(stored.existed ? .alreadyPresent : .copied)
                    writer.writeExternal(stored.id, size: UInt64(bytes.count))
                }
            case let .fileBacked(index, length, nameBytes):
                let file = try openReferencedFile(index, nameBytes, length: length, directories: directories)
                if length <= LayerImporter.inlineMax {
                    var bytes = [UInt8](repeating: 0, count: Int(length))
                    let count = try failing { () throws(SystemError) in
                        try withMutableBytes(&bytes) { (buffer) throws(SystemError) in try preadAll(file.raw, into: buffer, at: 0, path: file.path) }
                    }
                    guard count == bytes.count else {
                        throw .badFileReference(
                            directory: index, name: String(decoding: nameBytes, as: UTF8.self), reason: "external file shorter than declared length \(length) (got \(count))")
                    }
                    hasher.update(bytes)
                    writer.writeInline(bytes)
                } else {
                    let stored = try failing { () throws(RepositoryError) in
                        try repository.storeObject(file: file, size: length, allowCopy: !zeroCopy, context: &context, inspector: hasher)
                    }
                    hasher = stored.inspector
                    statistics.count(stored.method)
                    writer.writeExternal(stored.id, size: length)
                }
            }
        }
        let actual = hasher.digest
        guard actual == diffID else { throw .diffIDMismatch(expected: diffID, actual: actual) }
        let stream = try failing { () throws(RepositoryError) in try writer.finish() }
        do { return ReceivedLayer(stream: try storeLayer(stream, diffID: diffID), statistics: statistics) } catch { throw .failed(error) }
    }

    /// The regular file a FileBackedData chunk names, which must be `length` bytes long. The
    /// name may not leave its directory, through `..`, a symlink or a mount point.
    private func openReferencedFile(
        _ index: UInt32, _ nameBytes: [UInt8], length: UInt64, directories: [FileDescriptor]
    ) throws(LayerTransferError) -> FileDescriptor {
        guard let name = String(validating: nameBytes, as: UTF8.self) else {
            throw .badFileReference(directory: index, name: String(decoding: nameBytes, as: UTF8.self), reason: "non-UTF-8 filename")
        }
        func refuse(_ reason: String) -> LayerTransferError { .badFileReference(directory: index, name: name, reason: reason) }
        if let problem = SplitdirfdChunk.nameProblem(nameBytes) { throw refuse("invalid filename: \(problem)") }
        guard index < directories.count else { throw refuse("directory index out of range (\(directories.count) directories given)") }
        let directory = directories[Int(index)]
        var info = stat()
        guard fstat(directory.raw, &info) == 0 else { throw refuse(SystemError("stat the directory", path: directory.path).description) }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw refuse("descriptor \(index + 1) is not a directory (mode \(String(info.st_mode, radix: 8)))") }
        let file: FileDescriptor
        do { file = try FileDescriptor.openBeneath(name, in: directory) } catch { throw refuse("cannot open: \(SystemError.message(error.code))") }
        guard fstat(file.raw, &info) == 0 else { throw refuse(SystemError("stat", path: name).description) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw refuse("not a regular file (mode \(String(info.st_mode, radix: 8)))") }
        guard UInt64(info.st_size) == length else { throw refuse("declared length \(length) != actual size \(info.st_size)") }
        return file
    }

    private func failing<T>(_ body: () throws(RepositoryError) -> T) throws(LayerTransferError) -> T {
        do { return try body() } catch { throw .failed(.repository(error)) }
    }

    private func failing<T>(_ body: () throws(SystemError) -> T) throws(LayerTransferError) -> T {
        do { return try body() } catch { throw .failed(.system(error)) }
    }
}
