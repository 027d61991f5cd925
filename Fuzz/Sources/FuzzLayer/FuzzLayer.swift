// Arbitrary bytes as an uncompressed layer tar: everything `cfsctl oci pull` does with a
// layer. The import must either throw or store a stream that reads back; the entries must
// either be refused by the merge or give a tree the image writer takes.
// (Compressed layers only add zlib/zstd in front: those libraries are fuzzed upstream.)

import CLibFuzzer
import ComposeFS
import Repository

@testable import OCI

#if canImport(Glibc)
import Glibc
#endif

/// A scratch repository in memory-backed storage, and the file the input is handed over in.
struct Scratch {
    let repository: Repository
    let inputFD: Int32

    init() {
        let base = "/dev/shm/cfs-fuzz-layer-\(getpid())"
        do {
            _ = try Repository.initialize(at: base + "/repo", algorithm: .sha256, insecure: true)
            repository = try Repository(path: base + "/repo")
        } catch {
            fatalError("cannot create the scratch repository: \(error)")
        }
        inputFD = open(base + "/input", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard inputFD >= 0 else { fatalError("cannot create \(base)/input") }
    }
}

nonisolated(unsafe) let scratch = Scratch()

/// Sparse files bigger than this are not expanded here (expanding is hashing zeros: slow, not interesting).
let sparseSizeMax: UInt64 = 1 << 20

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard ftruncate(scratch.inputFD, 0) == 0, pwrite(scratch.inputFD, start, count, 0) == count,
        lseek(scratch.inputFD, 0, SEEK_SET) == 0
    else { fatalError("cannot stage the input") }
    let repository = scratch.repository
    guard let result = try? LayerImporter.importLayer(from: DescriptorSource(fd: scratch.inputFD), into: repository, layer: "fuzz")
    else { return 0 }
    // A stream the importer wrote must read back.
    let entries: [LayerEntry]
    do {
        entries = try LayerReader.entries(of: try SplitStream(result.stream, algorithm: .sha256), layer: "fuzz")
    } catch {
        fatalError("an imported layer does not read back: \(error)")
    }
    guard !entries.contains(where: { $0.entry.sparseMap != nil && $0.entry.size > sparseSizeMax }) else { return 0 }
    var rootfs = Rootfs(algorithm: .sha256) { (entry, content) throws(OCIError) in
        try SparseFiles.expand(entry, content, repository: repository, store: false)
    }
    guard (try? rootfs.apply(entries, layer: "fuzz")) != nil else { return 0 }
    _ = try? ImageWriter.image(root: rootfs.root)
    return 0
}

// SwiftPM links every executable with main bound to the module's own entry
// point, which shadows libFuzzer's main: start its driver from ours.
@main
enum FuzzLayerMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in data.map { fuzz($0, size) } ?? 0 })
    }
}
