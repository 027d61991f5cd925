// Arbitrary bytes as a composefs-dump(5) file: `Harness.dumpfile`.

import FuzzDriver
import FuzzHarnesses

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    do { try Harness.dumpfile(Array(UnsafeRawBufferPointer(start: start, count: count))) } catch { fatalError("\(error)") }
    return 0
}

@main
enum FuzzDumpfileMain {
    static func main() { runFuzzer { data, size in data.map { fuzz($0, size) } ?? 0 } }
}
