// Arbitrary bytes as an uncompressed layer tar: `Harness.layer` (everything `cfsctl oci pull`
// does with a layer), in a scratch repository in memory-backed storage.
// (Compressed layers only add zlib/zstd in front: those libraries are fuzzed upstream.)

import FuzzDriver
import FuzzHarnesses
import Repository

#if canImport(Glibc)
import Glibc
#endif

/// The scratch repository, and the file the input is handed over in.
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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    guard ftruncate(scratch.inputFD, 0) == 0, pwrite(scratch.inputFD, start, count, 0) == count,
        lseek(scratch.inputFD, 0, SEEK_SET) == 0
    else { fatalError("cannot stage the input") }
    do { try Harness.layer(fileDescriptor: scratch.inputFD, repository: scratch.repository) } catch { fatalError("\(error)") }
    return 0
}

@main
enum FuzzLayerMain {
    static func main() { runFuzzer { data, size in data.map { fuzz($0, size) } ?? 0 } }
}
