// meta.json: the repository's format version, digest algorithm and feature flags, in the
// layout composefs-rs writes (doc/repository.md).

import ComposeFSBase
import FsVerity

/// The digest naming every object: `fsverity-<hash>-<lg blocksize>`.
public struct RepositoryAlgorithm: Sendable, Equatable, CustomStringConvertible {
    public static let sha256 = RepositoryAlgorithm(hash: .sha256)
    public static let sha512 = RepositoryAlgorithm(hash: .sha512)
    /// composefs-rs's default.
    public static let `default` = sha512

    public let hash: FsVerityAlgorithm
    /// Only 4 KiB blocks (2^12) are supported, as in the reference.
    public var logBlockSize: Int { 12 }

    public init(hash: FsVerityAlgorithm) { self.hash = hash }

    public init(parsing text: String) throws(RepositoryError) {
        guard text.hasPrefix("fsverity-") else { throw .invalidAlgorithm("algorithm must start with 'fsverity-'") }
        let rest = text.dropFirst("fsverity-".count)
        guard let dash = rest.lastIndex(of: "-") else {
            throw .invalidAlgorithm("algorithm must be 'fsverity-<hash>-<lg_blocksize>'")
        }
        let hashName = rest[..<dash]
        let blockText = rest[rest.index(after: dash)...]
        guard let logBlockSize = UInt8(blockText) else { throw .invalidAlgorithm("invalid lg_blocksize '\(blockText)'") }
        guard logBlockSize == 12 else {
            throw .invalidAlgorithm("unsupported lg_blocksize \(logBlockSize) (only 12 is currently supported)")
        }
        guard let hash = FsVerityAlgorithm.allCases.first(where: { $0.name == hashName }) else {
            throw .invalidAlgorithm("unsupported hash algorithm '\(hashName)' (expected sha256 or sha512)")
        }
        self.hash = hash
    }

    public var description: String { "fsverity-\(hash.name)-\(logBlockSize)" }
}

public struct RepositoryMetadata: Sendable, Equatable {
    /// The newest format version this implementation reads and writes.
    public static let currentVersion = 1

    public var version: Int
    public var algorithm: RepositoryAlgorithm
    /// Features old tools may ignore, may only read, or must refuse (ext4-style).
    public var compatible: [String] = []
    public var readOnlyCompatible: [String] = []
    public var incompatible: [String] = []

    public init(algorithm: RepositoryAlgorithm) {
        version = Self.currentVersion
        self.algorithm = algorithm
    }

    /// Pretty JSON with two-space indents and a final newline, keys in the reference's order.
    public func encoded() -> [UInt8] {
        func list(_ items: [String]) -> String {
            items.isEmpty ? "[]" : "[\n" + items.map { "      \(jsonString($0))" }.joined(separator: ",\n") + "\n    ]"
        }
        let text = """
            {
              "version": \(version),
              "algorithm": \(jsonString(algorithm.description)),
              "features": {
                "compatible": \(list(compatible)),
                "read-only-compatible": \(list(readOnlyCompatible)),
                "incompatible": \(list(incompatible))
              }
            }

            """
        return Array(text.utf8)
    }

    public init(decoding bytes: [UInt8]) throws(RepositoryError) {
        let document: JSONValue
        do throws(JSONError) { document = try JSONValue.parse(bytes) } catch {
            throw .invalidMetadata("failed to parse meta.json: \(error)")
        }
        guard case .object = document else { throw .invalidMetadata("not a JSON object") }
        guard case let .integer(version)? = document["version"], version >= 0 else {
            throw .invalidMetadata("failed to parse meta.json: missing or invalid \"version\"")
        }
        guard case let .string(algorithmText)? = document["algorithm"] else {
            throw .invalidMetadata("failed to parse meta.json: missing or invalid \"algorithm\"")
        }
        self.version = Int(version)
        self.algorithm = try RepositoryAlgorithm(parsing: algorithmText)
        let features = document["features"]
        func strings(_ key: String) throws(RepositoryError) -> [String] {
            guard let value = features?[key] else { return [] }
            guard case let .array(items) = value else {
                throw .invalidMetadata("failed to parse meta.json: \"features.\(key)\" is not a list of strings")
            }
            var list: [String] = []
            for item in items {
                guard case let .string(text) = item else {
                    throw .invalidMetadata("failed to parse meta.json: \"features.\(key)\" is not a list of strings")
                }
                list.append(text)
            }
            return list
        }
        compatible = try strings("compatible")
        readOnlyCompatible = try strings("read-only-compatible")
        incompatible = try strings("incompatible")
    }

    /// Refuses what this implementation cannot safely use.
    func checkSupported() throws(RepositoryError) {
        guard version <= Self.currentVersion else {
            throw .unsupported(
                "unsupported repository format version \(version) (this tool supports up to \(Self.currentVersion))")
        }
        // No incompatible features are known to this version.
        guard incompatible.isEmpty else {
            throw .unsupported(
                "repository requires unknown incompatible features: [\(incompatible.map { jsonString($0) }.joined(separator: ", "))]")
        }
    }
}
