// Arbitrary bytes as the small documents a registry or an image archive hands us:
// `Harness.document`.

import CLibFuzzer
import FuzzHarnesses

#if canImport(Glibc)
import Glibc
#endif

/// Archives are indexed from a file: the input is written here first.
let archivePath = "/dev/shm/cfs-fuzz-document-\(getpid()).tar"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let fd = open(archivePath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0, write(fd, start, count) == count else { fatalError("cannot write \(archivePath)") }
    close(fd)
    Harness.document(Array(UnsafeRawBufferPointer(start: start, count: count)), archivePath: archivePath)
    return 0
}

// SwiftPM links every executable with main bound to the module's own entry
// point, which shadows libFuzzer's main: start its driver from ours.
@main
enum FuzzDocumentMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in data.map { fuzz($0, size) } ?? 0 })
    }
}
