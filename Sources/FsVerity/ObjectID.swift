// The name of everything stored by content: an fs-verity digest and the algorithm that made it.

import ComposeFSBase

/// An fs-verity digest naming an object (a file's content, an image, a split stream).
public struct ObjectID: Hashable, Sendable, CustomStringConvertible {
    public let algorithm: FsVerityAlgorithm
    /// Exactly `algorithm.digestSize` bytes.
    public let bytes: [UInt8]

    /// nil unless `bytes` has the algorithm's digest size.
    public init?(algorithm: FsVerityAlgorithm, bytes: some Collection<UInt8>) {
        guard bytes.count == algorithm.digestSize else { return nil }
        self.algorithm = algorithm
        self.bytes = Array(bytes)
    }

    /// The algorithm told by the digest's size (32 bytes SHA-256, 64 SHA-512), as in an
    /// overlayfs metacopy xattr or a dumpfile; nil for any other size.
    public init?(digest bytes: some Collection<UInt8>) {
        guard let algorithm = FsVerityAlgorithm.allCases.first(where: { $0.digestSize == bytes.count }) else { return nil }
        self.init(algorithm: algorithm, bytes: bytes)
    }

    /// Hex digits (either case) of a digest of `algorithm`.
    public init?(hex: some StringProtocol, algorithm: FsVerityAlgorithm) {
        guard let bytes = Hex.decode(hex) else { return nil }
        self.init(algorithm: algorithm, bytes: bytes)
    }

    /// The id an object path "xx/yyyy…" names, or the tail of a longer path ending in one
    /// (a symlink target such as "../objects/xx/yyyy…").
    public init?(objectPath path: some StringProtocol, algorithm: FsVerityAlgorithm) {
        let length = algorithm.digestSize * 2 + 1
        let tail = Array(path.utf8.suffix(length))
        guard tail.count == length, tail[2] == UInt8(ascii: "/") else { return nil }
        if path.utf8.count > length, path.utf8.dropLast(length).last != UInt8(ascii: "/") { return nil }
        self.init(hex: String(decoding: tail[0..<2] + tail[3...], as: UTF8.self), algorithm: algorithm)
    }

    /// Trusted callers only: a digest just computed, of the right size by construction.
    init(computed bytes: [UInt8], algorithm: FsVerityAlgorithm) {
        precondition(bytes.count == algorithm.digestSize)
        self.algorithm = algorithm
        self.bytes = bytes
    }

    public var hex: String { Hex.encode(bytes) }

    /// Where the object lives below an object directory: "xx/yyyy…" (the first byte names
    /// the subdirectory).
    public var objectPath: String {
        var path: [UInt8] = []
        path.reserveCapacity(bytes.count * 2 + 1)
        Hex.append(bytes, to: &path)
        path.insert(UInt8(ascii: "/"), at: 2)
        return String(decoding: path, as: UTF8.self)
    }

    /// "sha256:…" / "sha512:…", as composefs-rs prints ids.
    public var prefixedHex: String { "\(algorithm.name):\(hex)" }

    public var description: String { hex }

    // Whole buffers at once: the synthesized conformance hashes byte by byte.
    public func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}
