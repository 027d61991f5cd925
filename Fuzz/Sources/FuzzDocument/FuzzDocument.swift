// Arbitrary bytes as the small documents a registry or an image archive hands us:
// `Harness.document`.

import FuzzDriver
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

@main
enum FuzzDocumentMain {
    static func main() { runFuzzer { data, size in data.map { fuzz($0, size) } ?? 0 } }
}
