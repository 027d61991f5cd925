// Arbitrary bytes as a UKI, an os-release file, a Type 1 entry and a tree: `Harness.boot`.

import FuzzDriver
import FuzzHarnesses

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    do { try Harness.boot(Array(UnsafeRawBufferPointer(start: start, count: count))) } catch { fatalError("\(error)") }
    return 0
}

@main
enum FuzzBootMain {
    static func main() { runFuzzer { data, size in data.map { fuzz($0, size) } ?? 0 } }
}
