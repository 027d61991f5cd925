// SwiftPM links every executable with main bound to the module's own entry point, which
// shadows libFuzzer's main: each harness starts libFuzzer's driver from its own main with this.

import CLibFuzzer

#if canImport(Glibc)
import Glibc
#endif

/// Runs libFuzzer on the process's arguments with `testOneInput` for each input; never returns.
public func runFuzzer(_ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, testOneInput))
}
