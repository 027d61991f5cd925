// meta.json: the repository's format version, digest algorithm and feature flags, in the
// layout composefs-rs writes (doc/repository.md).

import ComposeFS
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

    /// The read-only-compatible feature of repositories whose images are format V1.
    public static let v1Feature = "v1_erofs"

    public var version: Int
    public var algorithm: RepositoryAlgorithm
    /// Features old tools may ignore, may only read, or must refuse (ext4-style).
    public var compatible: [String] = []
    public var readOnlyCompatible: [String] = []
    public var incompatible: [String] = []
    /// `erofs_formats`: the image format(s) images are written in, the default first; nil when
    /// meta.json has none (a repository from before the field, whose format `formats` tells).
    public var erofsFormats: (default: FormatVersion, extra: [FormatVersion])?

    /// What `cfsctl init` writes: format V1 unless told otherwise.
    public init(algorithm: RepositoryAlgorithm, erofsVersion: FormatVersion = .v1) {
        version = Self.currentVersion
        self.algorithm = algorithm
        erofsFormats = (erofsVersion, [])
        if erofsVersion == .v1 { readOnlyCompatible = [Self.v1Feature] }
    }

    /// The formats images are written in, the default first: `erofs_formats` when it says more
    /// than V2 alone; otherwise V1 in repositories with the `v1_erofs` feature and V2 in those
    /// from before either existed (composefs-rs's rule).
    public var formats: [FormatVersion] {
        if let erofsFormats, erofsFormats.default != .v2 || !erofsFormats.extra.isEmpty {
            return [erofsFormats.default] + erofsFormats.extra.sorted()
        }
        return [readOnlyCompatible.contains(Self.v1Feature) ? .v1 : .v2]
    }

    public static func == (a: RepositoryMetadata, b: RepositoryMetadata) -> Bool {
        a.version == b.version && a.algorithm == b.algorithm && a.compatible == b.compatible
            && a.readOnlyCompatible == b.readOnlyCompatible && a.incompatible == b.incompatible
            && a.erofsFormats?.default == b.erofsFormats?.default && a.erofsFormats?.extra == b.erofsFormats?.extra
    }

    /// How `init` names a configuration in its refusals: `algorithm: …, erofs_version: V1`.
    var summary: String { "algorithm: \(algorithm), erofs_version: V\(formats[0].rawValue)" }

    /// Pretty JSON with two-space indents and a final newline, keys in the reference's order.
    public func encoded() -> [UInt8] {
        func list(_ items: [String], _ indent: String) -> String {
            items.isEmpty ? "[]" : "[\n" + items.map { "\(indent)  \(jsonString($0))" }.joined(separator: ",\n") + "\n\(indent)]"
        }
        var text = """
            {
              "version": \(version),
              "algorithm": \(jsonString(algorithm.description)),
              "features": {
                "compatible": \(list(compatible, "    ")),
                "read-only-compatible": \(list(readOnlyCompatible, "    ")),
                "incompatible": \(list(incompatible, "    "))
              }
            """
        if let erofsFormats {
            text += ",\n  \"erofs_formats\": {\n    \"default\": \(erofsFormats.default.rawValue)"
            if !erofsFormats.extra.isEmpty {
                text += ",\n    \"extra\": [\n" + erofsFormats.extra.map { "      \($0.rawValue)" }.joined(separator: ",\n") + "\n    ]"
            }
            text += "\n  }"
        }
        return Array((text + "\n}\n").utf8)
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
        if let formats = document["erofs_formats"] {
            func format(_ value: JSONValue?) throws(RepositoryError) -> FormatVersion {
                guard case let .integer(number)? = value, let version = FormatVersion(rawValue: Int(number)) else {
                    throw .invalidMetadata("failed to parse meta.json: invalid EROFS format version in \"erofs_formats\"")
                }
                return version
            }
            var extra: [FormatVersion] = []
            if let list = formats["extra"] {
                guard case let .array(items) = list else {
                    throw .invalidMetadata("failed to parse meta.json: \"erofs_formats.extra\" is not a list")
                }
                for item in items { extra.append(try format(item)) }
            }
            erofsFormats = (try format(formats["default"]), Array(Set(extra)).sorted())
        }
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
