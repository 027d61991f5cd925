// The reference material in ../shared (beside the checkout): present in CI and on the
// developers' machines, absent in a user's clone. Tests that need it are enabled only when it
// is there, so a clone without it shows them as skipped, with the reason; in CI (CI=true)
// they run regardless and fail on its absence.

import Foundation
import Testing

public enum SharedAssets {
    /// ../shared, from this file's place in the checkout.
    public static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("shared").path

    /// The reference vectors: dumpfiles with the digests of the images the reference builds.
    public static let vectorsPath = root + "/vectors/composefs-assets"

    public static let isCI = ProcessInfo.processInfo.environment["CI"] == "true"

    /// Whether the tests of the vectors run: the vectors are here, or this is CI (where their
    /// absence is an error).
    public static var runVectorTests: Bool {
        FileManager.default.fileExists(atPath: vectorsPath) || isCI
    }

    /// The skip reason shown when `runVectorTests` is false.
    public static let vectorsMissing: Comment = "the reference vectors are not in \(vectorsPath)"

    /// The vectors directory; throws (failing the test) when it is missing.
    public static func vectors() throws -> String {
        guard FileManager.default.fileExists(atPath: vectorsPath) else { throw MissingAssets(path: vectorsPath) }
        return vectorsPath
    }

    /// Names in the vectors directory, sorted; empty when it is missing.
    public static func vectorNames() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: vectorsPath)) ?? []).sorted()
    }
}

extension SharedAssets {
    /// The reference C tools (containers/composefs 1.0.8) built in ../shared/reference.
    public static let cToolsPath = root + "/reference/c-composefs-1.0.8"

    /// Whether the side-by-side tests with the reference C tools run (see `runVectorTests`).
    public static var runCReferenceTests: Bool {
        FileManager.default.isExecutableFile(atPath: cToolsPath + "/mkcomposefs") || isCI
    }

    public static let cReferenceMissing: Comment = "the reference C tools are not in \(cToolsPath)"

    /// A reference C tool; throws (failing the test) when it is missing.
    public static func cTool(_ name: String) throws -> String {
        let path = cToolsPath + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else { throw MissingAssets(path: path) }
        return path
    }
}

extension SharedAssets {
    /// The composefs-rs 0.9.0 reference binaries (cfsctl, cfs-oracle, …) in ../shared/reference.
    public static let rsToolsPath = root + "/reference/composefs-rs-0.9.0"

    /// Whether the side-by-side tests with composefs-rs run (see `runVectorTests`).
    public static var runRSReferenceTests: Bool {
        FileManager.default.isExecutableFile(atPath: rsToolsPath + "/cfsctl") || isCI
    }

    public static let rsReferenceMissing: Comment = "the composefs-rs reference tools are not in \(rsToolsPath)"

    /// A composefs-rs reference tool; throws (failing the test) when it is missing.
    public static func rsTool(_ name: String) throws -> String {
        let path = rsToolsPath + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else { throw MissingAssets(path: path) }
        return path
    }
}

public struct MissingAssets: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "\(path) is missing (it must be present in CI)" }
}
