// Inputs kept from the OCI libFuzzer harnesses in Fuzz/, replayed through the same harness
// bodies: each must be accepted or refused with an error, never crash or break an invariant.

import FuzzHarnesses
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

private let layers = KeptInputs("layer")
private let documents = KeptInputs("document")

@Suite struct OCIFuzzRegressionTests {
    @Test func inputsArePresent() {
        #expect(!layers.names.isEmpty)
        #expect(!documents.names.isEmpty)
    }

    /// Fuzz/Sources/FuzzLayer.
    @Test(arguments: layers.names)
    func layer(_ name: String) throws {
        let scratch = try ScratchRepository()
        let fd = open(layers.path(name), O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        try Harness.layer(fileDescriptor: fd, repository: scratch.repository)
    }

    /// Fuzz/Sources/FuzzDocument (the file is its own archive).
    @Test(arguments: documents.names)
    func document(_ name: String) throws {
        Harness.document(try documents.contents(name), archivePath: documents.path(name))
    }
}
