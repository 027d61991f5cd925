// Inputs kept from the libFuzzer harnesses in Fuzz/, replayed through the same harness
// bodies: each must be accepted or rejected with an error, never crash or break an invariant.

import ComposeFSBase
import FuzzHarnesses
import Testing
import TestSupport

private let dumpfiles = KeptInputs("dumpfile")
private let images = KeptInputs("image")

@Suite struct FuzzRegressionTests {
    @Test func inputsArePresent() {
        #expect(!dumpfiles.names.isEmpty)
        #expect(!images.names.isEmpty)
    }

    /// Fuzz/Sources/FuzzDumpfile.
    @Test(arguments: dumpfiles.names)
    func dumpfile(_ name: String) throws {
        try Harness.dumpfile(try dumpfiles.contents(name))
    }

    /// Fuzz/Sources/FuzzImage.
    @Test(arguments: images.names)
    func image(_ name: String) throws {
        try withBytes(try images.contents(name)) { (image) throws(InvariantViolation) in try Harness.image(image) }
    }
}
