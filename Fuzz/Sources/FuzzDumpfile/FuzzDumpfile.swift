// Arbitrary bytes as a composefs-dump(5) file, parsed in both modes. A tree that
// parses is written as an image, which our own reader must accept (mkcomposefs
// output feeds composefs-info), and what it reads is dumped again. The dump need
// not parse: like the reference, the parser caps a line's escaped xattr text.

import CLibFuzzer
import ComposeFS
import Dumpfile

#if canImport(Glibc)
import Glibc
#endif

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let text = Array(UnsafeRawBufferPointer(start: start, count: count))
    _ = try? DumpfileParser.parse(text, strict: true)
    guard let root = try? DumpfileParser.parse(text) else { return 0 }
    let image: [UInt8]
    do { image = try ImageWriter.image(root: root) } catch { return 0 }
    let readBack: Inode
    do {
        readBack = try image.withUnsafeBytes { (bytes) throws(ImageReadError) in try ImageReader.read(bytes) }
    } catch {
        fatalError("image written from a parsed dumpfile does not read back: \(error)")
    }
    _ = DumpfileWriter.dump(root: readBack)
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
