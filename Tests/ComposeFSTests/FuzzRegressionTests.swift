// Inputs kept from the libFuzzer harnesses in Fuzz/ (crashers once fixed, and
// small inputs that reach deep error paths), run through the same steps as the
// harnesses: each must be accepted or rejected with an error, never crash.

import ComposeFS
import Dumpfile
import Foundation
import Testing

private let regressionDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("FuzzRegressions")

/// The input files kept for a harness: "dumpfile" or "image".
private func regressionInputs(_ kind: String) -> [String] {
    let directory = regressionDirectory.appendingPathComponent(kind).path
    return ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
}

private func contents(_ kind: String, _ name: String) throws -> [UInt8] {
    try [UInt8](Data(contentsOf: regressionDirectory.appendingPathComponent(kind).appendingPathComponent(name)))
}

@Suite struct FuzzRegressionTests {
    @Test func inputsArePresent() {
        #expect(!regressionInputs("dumpfile").isEmpty)
        #expect(!regressionInputs("image").isEmpty)
    }

    /// Fuzz/Sources/FuzzDumpfile: parse, write, read back, dump.
    @Test(arguments: regressionInputs("dumpfile"))
    func dumpfile(_ name: String) throws {
        let text = try contents("dumpfile", name)
        _ = try? DumpfileParser.parse(text, strict: true)
        guard let root = try? DumpfileParser.parse(text), let image = try? ImageWriter.image(root: root) else { return }
        // An image we wrote must read back.
        let readBack = try image.withUnsafeBytes { try ImageReader.read($0) }
        _ = DumpfileWriter.dump(root: readBack)
    }

    /// Fuzz/Sources/FuzzImage: read, dump, list, read filtered, rewrite.
    @Test(arguments: regressionInputs("image"))
    func image(_ name: String) throws {
        let data = try contents("image", name)
        data.withUnsafeBytes { image in
            guard let version = try? ImageReader.version(of: image), let root = try? ImageReader.read(image) else { return }
            _ = DumpfileWriter.dump(root: root)
            DumpfileWriter.writeListing(root: root) { _ in }
            if let first = root.entries.first {
                _ = try? ImageReader.read(image, filter: [first.name])
            }
            _ = try? ImageWriter.image(root: root, options: ImageOptions(minVersion: version, maxVersion: version))
        }
    }
}
