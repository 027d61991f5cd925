// Inputs kept from Fuzz/Sources/FuzzBoot (seeds, and crashers once fixed), replayed through
// the same harness body: each must be read or refused with an error, never crash or break an
// invariant.

import FuzzHarnesses
import Testing
import TestSupport

private let inputs = KeptInputs("boot")

@Suite struct BootFuzzRegressionTests {
    @Test func inputsArePresent() { #expect(!inputs.names.isEmpty) }

    @Test(arguments: inputs.names)
    func boot(_ name: String) throws { try Harness.boot(try inputs.contents(name)) }
}
