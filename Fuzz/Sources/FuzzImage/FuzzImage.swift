// Arbitrary bytes as a composefs image: everything composefs-info and
// composefs-dump do with an image they are given. The reader must either
// throw or return a tree that the dumpfile writer and image writer handle.

import CLibFuzzer
import ComposeFS
import Dumpfile

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let image = UnsafeRawBufferPointer(start: start, count: count)
    guard let version = try? ImageReader.version(of: image), let root = try? ImageReader.read(image) else { return 0 }
    _ = DumpfileWriter.dump(root: root)
    DumpfileWriter.writeListing(root: root) { _ in }
    // composefs-info --filter: load a single root entry.
    if let first = root.entries.first {
        _ = try? ImageReader.read(image, filter: [first.name])
    }
    // composefs-dump IMAGE DEST: rewrite with the source's version.
    _ = try? ImageWriter.image(root: root, options: ImageOptions(minVersion: version, maxVersion: version))
    return 0
}

// SwiftPM links every executable with main bound to the module's own entry
// point, which shadows libFuzzer's main: start its driver from ours.
@main
enum FuzzImageMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in data.map { fuzz($0, size) } ?? 0 })
    }
}
