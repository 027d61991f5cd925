// The bodies of the libFuzzer harnesses in Fuzz/, shared with the regression tests that replay
// the inputs they found: each takes arbitrary bytes through what a tool does with untrusted
// input. Bad input may fail with an error anywhere; what must never happen is a crash, a hang,
// or a broken invariant (reported as `InvariantViolation`, which a harness turns into a crash).

import ComposeFS
import ComposeFSBase
import Dumpfile
import EROFS
import FsVerity
import OCI
import Repository

#if canImport(Glibc)
import Glibc
#endif

/// Something that must hold for every input did not.
public struct InvariantViolation: Error, CustomStringConvertible {
    public let description: String
}

public enum Harness {
    /// A composefs-dump(5) file, parsed in both modes. A tree that parses is written as an
    /// image, which our own reader must accept (mkcomposefs output feeds composefs-info) and
    /// composefs-fuse must serve: every entry found again by lookup. What the reader returns is
    /// dumped again (the dump need not parse: like the reference, the parser caps a line's
    /// escaped xattr text).
    public static func dumpfile(_ text: [UInt8]) throws(InvariantViolation) {
        _ = try? DumpfileParser.parse(text, strict: true)
        guard let root = try? DumpfileParser.parse(text), let image = try? ImageWriter.image(root: root) else { return }
        try withBytes(image) { (bytes) throws(InvariantViolation) in
            let readBack: Inode
            do { readBack = try ImageReader.read(bytes) } catch {
                throw InvariantViolation(description: "image written from a parsed dumpfile does not read back: \(error)")
            }
            _ = DumpfileWriter.dump(root: readBack)
            try serve(bytes, checkLookups: true)
        }
    }

    /// An image: what composefs-info and composefs-dump do with it (the header and version
    /// check, the whole tree, the dump and `ls` listing, a filtered read, rewriting it at its
    /// version), and what composefs-fuse does (lookups, directory listings from any cookie,
    /// xattrs and data of each inode, one at a time through the image view).
    public static func image(_ image: UnsafeRawBufferPointer) throws(InvariantViolation) {
        try serve(image, checkLookups: false)
        guard let version = try? ImageReader.version(of: image), let root = try? ImageReader.read(image) else { return }
        _ = DumpfileWriter.dump(root: root)
        DumpfileWriter.writeListing(root: root) { _ in }
        if let first = root.entries.first {
            _ = try? ImageReader.read(image, filter: [first.name])
        }
        _ = try? ImageWriter.image(root: root, options: ImageOptions(minVersion: version, maxVersion: version))
    }

    /// Inodes visited by `serve` at most, so any input is a bounded amount of work.
    static let servedInodesMax = 4096

    /// Walks the image the way composefs-fuse answers requests, from the root, breadth first.
    /// With `checkLookups` (an image we wrote), every listed name must be found by lookup.
    static func serve(_ image: UnsafeRawBufferPointer, checkLookups: Bool) throws(InvariantViolation) {
        guard let view = try? ImageView(image) else { return }
        var pending = [view.rootNid]
        var seen: Set<UInt64> = [view.rootNid]
        while let nid = pending.popLast(), seen.count <= servedInodesMax {
            guard let inode = try? view.inode(nid) else { continue }
            _ = try? view.forEachXattr(inode) { _ in true }
            for name in [OverlayXattr.redirectSuffix, OverlayXattr.metacopySuffix] {
                if let value = try? view.xattr(inode, index: EROFSXattrPrefix.trusted, name: name) {
                    _ = OverlayMetacopy(decoding: value)
                }
            }
            if inode.isFlat, let (blocks, tail) = try? view.dataRanges(inode) {
                _ = view.bytes(blocks).reduce(0, &+) &+ view.bytes(tail).reduce(0, &+)
            }
            guard inode.isDirectory else { continue }
            var entries: [(name: [UInt8], nid: UInt64, next: Int)] = []
            _ = try? view.forEachDirent(inode) { record in
                entries.append((Array(record.name), record.nid, record.nextOffset))
                return entries.count < servedInodesMax
            }
            // Listings resumed from each cookie, as readdir continues them.
            for entry in entries.prefix(64) { _ = try? view.forEachDirent(inode, from: entry.next) { _ in false } }
            for entry in entries {
                let found = try? withBytes(entry.name) { (name) throws(ImageFormatError) in try view.lookup(inode, name) }
                if checkLookups && found != entry.nid {
                    throw InvariantViolation(
                        description: "inode \(nid): entry '\(displayBytes(entry.name))' (nid \(entry.nid)) is found by lookup as \(String(describing: found))")
                }
                if entry.name != [0x2E] && entry.name != [0x2E, 0x2E] && seen.insert(entry.nid).inserted { pending.append(entry.nid) }
            }
            _ = try? withBytes([UInt8]("no such entry".utf8)) { (name) throws(ImageFormatError) in try view.lookup(inode, name) }
        }
    }

    /// Sparse files bigger than this are not expanded (expanding is hashing zeros: slow, not
    /// interesting).
    static let sparseSizeMax: UInt64 = 1 << 20

    /// An uncompressed layer tar (read from `fileDescriptor`): everything `cfsctl oci pull` does
    /// with a layer. The import must either throw or store a stream that reads back; the entries
    /// must either be refused by the merge or give a tree the image writer takes.
    public static func layer(fileDescriptor fd: Int32, repository: Repository) throws(InvariantViolation) {
        guard let result = try? LayerImporter.importLayer(from: DescriptorSource(fd: fd), into: repository, layer: "fuzz") else { return }
        let entries: [LayerEntry]
        do {
            entries = try LayerReader.entries(of: try SplitStream(result.stream, algorithm: repository.algorithm), layer: "fuzz")
        } catch {
            throw InvariantViolation(description: "an imported layer does not read back: \(error)")
        }
        guard !entries.contains(where: { $0.entry.sparseMap != nil && $0.entry.size > sparseSizeMax }) else { return }
        let rootfs = Rootfs(
            expandSparse: { (entry, content) throws(OCIError) in
                try SparseFiles.expand(entry, content, repository: repository, store: false)
            },
            readObject: { (id) throws(OCIError) in
                do throws(RepositoryError) { return try repository.readObject(id) } catch { throw .repository(error) }
            })
        guard (try? rootfs.apply(entries, layer: "fuzz")) != nil else { return }
        // Most inputs have no /usr to make a container root of: their trees are written as they are.
        if (try? rootfs.finish(RootfsOptions(), image: "fuzz")) == nil { ContainerRoot.countLinks(rootfs.root) }
        _ = try? ImageWriter.image(root: rootfs.root)
    }

    /// The small documents a registry or an image archive hands over: a manifest or index
    /// (told apart as on pull), an image config, any JSON `oci inspect` pretty-prints, a
    /// WWW-Authenticate challenge, an image reference, and (the same bytes, stored at
    /// `archivePath`) an oci-archive/docker-archive tar whose members are indexed.
    public static func document(_ bytes: [UInt8], archivePath: String) {
        for mediaType in [nil, MediaType.ociManifest, MediaType.ociIndex] {
            _ = try? Documents.manifestDocument(bytes, mediaType: mediaType, what: "fuzz")
        }
        _ = try? Documents.decode(ImageConfig.self, bytes, what: "fuzz")
        _ = (try? JSONValue.parse(bytes))?.pretty()
        let text = String(decoding: bytes, as: UTF8.self)
        _ = RegistrySource.parseChallenge(text)
        _ = try? RegistryReference(parsing: text)
        _ = try? ArchiveIndex.members(of: archivePath)
    }
}
