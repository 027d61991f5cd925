// Arbitrary bytes as a composefs image: `Harness.image` (composefs-info, composefs-dump and
// composefs-fuse on it).

import FuzzDriver
import FuzzHarnesses

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    do { try Harness.image(UnsafeRawBufferPointer(start: start, count: count)) } catch { fatalError("\(error)") }
    return 0
}

@main
enum FuzzImageMain {
    static func main() { runFuzzer { data, size in data.map { fuzz($0, size) } ?? 0 } }
}
