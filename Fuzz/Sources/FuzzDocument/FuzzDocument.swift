// Arbitrary bytes as the small documents a registry or an image archive hands us: a manifest
// or index (told apart as on pull), an image config, any JSON `oci inspect` pretty-prints,
// a WWW-Authenticate challenge, an image reference, and an oci-archive/docker-archive tar
// whose members are indexed. Each must parse or fail with an error, never crash.

import CLibFuzzer

@testable import OCI

#if canImport(Glibc)
import Glibc
#endif

/// Archives are indexed from a file: the input is written here first.
let archivePath = "/dev/shm/cfs-fuzz-document-\(getpid()).tar"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = [UInt8](UnsafeRawBufferPointer(start: start, count: count))
    for mediaType in [nil, MediaType.ociManifest, MediaType.ociIndex] {
        _ = try? Documents.manifestDocument(bytes, mediaType: mediaType, what: "fuzz")
    }
    _ = try? Documents.decode(ImageConfig.self, bytes, what: "fuzz")
    _ = (try? JSONValue.parse(bytes, what: "fuzz"))?.pretty()
    let text = String(decoding: bytes, as: UTF8.self)
    _ = RegistrySource.parseChallenge(text)
    _ = try? RegistryReference(parsing: text)

    let fd = open(archivePath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0, write(fd, start, count) == count else { fatalError("cannot write \(archivePath)") }
    close(fd)
    _ = try? ArchiveIndex.members(of: archivePath)
    return 0
}

@main
enum FuzzDocumentMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in data.map { fuzz($0, size) } ?? 0 })
    }
}
