import Foundation

/// The inputs kept from a fuzz harness (crashers once fixed, and inputs that reach deep
/// paths), in FuzzRegressions/KIND beside the test file that replays them.
public struct KeptInputs: Sendable {
    public let directory: String

    public init(_ kind: String, besideFile file: String = #filePath) {
        directory = URL(fileURLWithPath: file).deletingLastPathComponent()
            .appendingPathComponent("FuzzRegressions").appendingPathComponent(kind).path
    }

    /// File names, sorted.
    public var names: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted() }

    public func path(_ name: String) -> String { directory + "/" + name }

    public func contents(_ name: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path(name)))) }
}
