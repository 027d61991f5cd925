// Arbitrary bytes as a composefs-dump(5) file: `Harness.dumpfile`.

import CLibFuzzer
import FuzzHarnesses

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    do { try Harness.dumpfile(Array(UnsafeRawBufferPointer(start: start, count: count))) } catch { fatalError("\(error)") }
    return 0
}

// SwiftPM links every executable with main bound to the module's own entry
// point, which shadows libFuzzer's main: start its driver from ours.
@main
enum FuzzDumpfileMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in data.map { fuzz($0, size) } ?? 0 })
    }
}
