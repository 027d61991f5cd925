// Inputs kept from the OCI libFuzzer harnesses in Fuzz/ (crashers once fixed, and seeds that
// reach deep paths), run through the same steps as the harnesses: each must be accepted or
// refused with an error, never crash.

import ComposeFS
import ComposeFSBase
import Foundation
import Repository
import TestSupport
import Testing

@testable import OCI

private let regressionDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("FuzzRegressions")

/// The input files kept for a harness: "layer" or "document".
private func regressionInputs(_ kind: String) -> [String] {
    let directory = regressionDirectory.appendingPathComponent(kind).path
    return ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
}

private func path(_ kind: String, _ name: String) -> String {
    regressionDirectory.appendingPathComponent(kind).appendingPathComponent(name).path
}

@Suite struct OCIFuzzRegressionTests {
    @Test func inputsArePresent() {
        #expect(!regressionInputs("layer").isEmpty)
        #expect(!regressionInputs("document").isEmpty)
    }

    /// Fuzz/Sources/FuzzLayer: import, read the stream back, merge, write the image.
    @Test(arguments: regressionInputs("layer"))
    func layer(_ name: String) throws {
        let scratch = try ScratchRepository()
        let repository = scratch.repository
        let fd = open(path("layer", name), O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        guard let result = try? LayerImporter.importLayer(from: DescriptorSource(fd: fd), into: repository, layer: "fuzz") else {
            return
        }
        let entries = try LayerReader.entries(of: try SplitStream(result.stream, algorithm: .sha256), layer: "fuzz")
        guard !entries.contains(where: { $0.entry.sparseMap != nil && $0.entry.size > 1 << 20 }) else { return }
        var rootfs = Rootfs(algorithm: .sha256) { (entry, content) throws(OCIError) in
            try SparseFiles.expand(entry, content, repository: repository, store: false)
        }
        guard (try? rootfs.apply(entries, layer: "fuzz")) != nil else { return }
        _ = try? ImageWriter.image(root: rootfs.root)
    }

    /// Fuzz/Sources/FuzzDocument: every document decoder, challenge and reference parsing, archive indexing.
    @Test(arguments: regressionInputs("document"))
    func document(_ name: String) throws {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path("document", name))))
        for mediaType in [nil, MediaType.ociManifest, MediaType.ociIndex] {
            _ = try? Documents.manifestDocument(bytes, mediaType: mediaType, what: "fuzz")
        }
        _ = try? Documents.decode(ImageConfig.self, bytes, what: "fuzz")
        _ = (try? JSONValue.parse(bytes))?.pretty()
        let text = String(decoding: bytes, as: UTF8.self)
        _ = RegistrySource.parseChallenge(text)
        _ = try? RegistryReference(parsing: text)
        _ = try? ArchiveIndex.members(of: path("document", name))
    }
}
