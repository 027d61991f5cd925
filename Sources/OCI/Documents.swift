// The OCI image-spec documents (and their Docker schema 2 equivalents): descriptors,
// manifests, indexes and image configs. Only the fields composefs needs are decoded; the
// documents themselves are always kept as the exact bytes received, since digests name bytes.

import ComposeFSBase
import Crypto
import Foundation

/// "ALGORITHM:HEX", as in descriptors. Only sha256 and sha512 are accepted.
public struct Digest: Hashable, Sendable, CustomStringConvertible, Codable {
    public let algorithm: String
    public let hex: String

    public init(parsing text: String) throws(OCIError) {
        let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { throw .badDocument(what: "digest '\(text)'", reason: "expected ALGORITHM:HEX") }
        let algorithm = String(parts[0])
        let hex = String(parts[1])
        let length: Int
        switch algorithm {
        case "sha256": length = 64
        case "sha512": length = 128
        default: throw .badDocument(what: "digest '\(text)'", reason: "unsupported digest algorithm '\(algorithm)'")
        }
        guard hex.utf8.count == length, hex.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw .badDocument(what: "digest '\(text)'", reason: "expected \(length) lowercase hex digits")
        }
        self.algorithm = algorithm
        self.hex = hex
    }

    /// The SHA-256 digest of `bytes`.
    public static func sha256(_ bytes: some Sequence<UInt8>) -> Digest {
        var hasher = SHA256()
        hasher.update(data: Array(bytes))
        return Digest(uncheckedAlgorithm: "sha256", hex: Hex.encode(hasher.finalize()))
    }

    init(uncheckedAlgorithm algorithm: String, hex: String) {
        self.algorithm = algorithm
        self.hex = hex
    }

    public var description: String { algorithm + ":" + hex }

    /// Whether `bytes` hash to this digest.
    public func matches(_ bytes: [UInt8]) -> Bool { computed(over: bytes) == self }

    func computed(over bytes: [UInt8]) -> Digest {
        switch algorithm {
        case "sha512": Digest(uncheckedAlgorithm: "sha512", hex: Hex.encode(SHA512.hash(data: bytes)))
        default: Digest(uncheckedAlgorithm: "sha256", hex: Hex.encode(SHA256.hash(data: bytes)))
        }
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        do { try self.init(parsing: text) } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: error.description))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

public enum MediaType {
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayout = "application/vnd.oci.image.layout.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayer = "application/vnd.docker.image.rootfs.diff.tar"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"

    static let indexes: Set<String> = [ociIndex, dockerManifestList]
    static let manifests: Set<String> = [ociManifest, dockerManifest]
    /// Configs of container images (anything else is an artifact's).
    static let imageConfigs: Set<String> = [ociConfig, dockerConfig]
    /// Everything a registry may answer a manifest request with.
    static let acceptedManifests = [ociManifest, ociIndex, dockerManifest, dockerManifestList]
}

public struct Platform: Codable, Sendable, Equatable {
    public var architecture: String
    public var os: String
    public var variant: String?

    public init(architecture: String, os: String, variant: String? = nil) {
        self.architecture = architecture
        self.os = os
        self.variant = variant
    }

    /// This machine's platform, in Go's GOARCH names.
    public static var current: Platform {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "x86_64": return Platform(architecture: "amd64", os: "linux")
        case "aarch64": return Platform(architecture: "arm64", os: "linux", variant: "v8")
        case "armv7l": return Platform(architecture: "arm", os: "linux", variant: "v7")
        case "i686", "i386": return Platform(architecture: "386", os: "linux")
        default: return Platform(architecture: machine, os: "linux")
        }
    }

    /// Whether an index entry's platform fits this one (a missing variant fits any).
    func accepts(_ other: Platform) -> Bool {
        guard architecture == other.architecture, os == other.os else { return false }
        guard let variant, let otherVariant = other.variant else { return true }
        return variant == otherVariant
    }
}

public struct Descriptor: Codable, Sendable, Equatable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var platform: Platform?
    public var annotations: [String: String]?
}

public struct Manifest: Codable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    /// The manifest this one refers to (a signature or attestation of that image, say).
    public var subject: Descriptor?
}

public struct ImageIndex: Codable, Sendable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var manifests: [Descriptor]
}

/// The parts of an image config composefs uses.
public struct ImageConfig: Codable, Sendable {
    public struct RootFS: Codable, Sendable {
        public var type: String
        public var diff_ids: [Digest]
    }
    /// The execution parameters; only the labels matter here.
    public struct Execution: Codable, Sendable {
        public var labels: [String: String]?

        enum CodingKeys: String, CodingKey { case labels = "Labels" }
    }
    public var architecture: String?
    public var os: String?
    public var created: String?
    public var config: Execution?
    public var rootfs: RootFS
}

/// Which kind of document a manifest-endpoint answer is.
package enum ManifestDocument {
    case manifest(Manifest)
    case index(ImageIndex)
}

package enum Documents {
    package static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], what: String) throws(OCIError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let DecodingError.dataCorrupted(context) {
            throw .badDocument(what: what, reason: context.debugDescription)
        } catch let DecodingError.keyNotFound(key, _) {
            throw .badDocument(what: what, reason: "missing field '\(key.stringValue)'")
        } catch let DecodingError.typeMismatch(_, context) {
            throw .badDocument(
                what: what, reason: "wrong type at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'")
        } catch {
            throw .badDocument(what: what, reason: "not valid JSON")
        }
    }

    /// A manifest or an index, told apart by mediaType (or, when absent, by its fields).
    package static func manifestDocument(_ bytes: [UInt8], mediaType: String?, what: String) throws(OCIError) -> ManifestDocument {
        struct Probe: Decodable {
            var mediaType: String?
            var manifests: [Descriptor]?
            var schemaVersion: Int?
        }
        let probe = try decode(Probe.self, bytes, what: what)
        guard probe.schemaVersion == 2 else { throw .badDocument(what: what, reason: "unsupported schemaVersion (expected 2)") }
        let type = probe.mediaType ?? mediaType
        if let type, MediaType.indexes.contains(type) || (probe.manifests != nil && !MediaType.manifests.contains(type)) {
            return .index(try decode(ImageIndex.self, bytes, what: what))
        }
        if type == nil && probe.manifests != nil { return .index(try decode(ImageIndex.self, bytes, what: what)) }
        return .manifest(try decode(Manifest.self, bytes, what: what))
    }
}
