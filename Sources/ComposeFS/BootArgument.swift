// The kernel command-line argument that names the image a system boots, in composefs-rs's
// forms: `composefs.digest=v1-<hash>-12:<hex>` for V0/V1 images, `composefs=<hex>` for V2
// (the algorithm told by the length of the hex); a `?` after the `=` lets the initramfs mount
// the image without fs-verity. Also the command line split as the kernel splits it.

import FsVerity

public struct BootArgument: Equatable, Sendable {
    public static let digestKey = "composefs.digest"
    public static let legacyKey = "composefs"

    public var id: ObjectID
    /// V1 for `composefs.digest=v1-…` (images of format 0 or 1), V2 otherwise.
    public var format: FormatVersion
    /// Whether fs-verity is optional at boot.
    public var insecure: Bool

    public init(id: ObjectID, format: FormatVersion, insecure: Bool) {
        self.id = id
        self.format = format
        self.insecure = insecure
    }

    public var text: String {
        let marker = insecure ? "?" : ""
        switch format {
        case .v0, .v1: return "\(Self.digestKey)=\(marker)v1-\(id.algorithm.name)-12:\(id.hex)"
        case .v2: return "\(Self.legacyKey)=\(marker)\(id.hex)"
        }
    }

    /// Whether `key` is one of the keys composefs reads.
    public static func isComposefsKey(_ key: String) -> Bool { key == digestKey || key == legacyKey }

    /// The argument `key=value`; nil when the key is not composefs's.
    public init?(key: String, value: String?) throws(BootArgumentError) {
        guard Self.isComposefsKey(key) else { return nil }
        guard let value else { throw BootArgumentError(argument: key, reason: "it has no value") }
        var rest = Substring(value)
        let whole = "\(key)=\(rest)"
        let insecure = rest.first == "?"
        if insecure { rest = rest.dropFirst() }
        if key == Self.legacyKey {
            let algorithm: FsVerityAlgorithm
            switch rest.count {
            case 64: algorithm = .sha256
            case 128: algorithm = .sha512
            default: throw BootArgumentError(argument: whole, reason: "a digest has 64 or 128 hex digits, not \(rest.count)")
            }
            guard let id = ObjectID(hex: rest, algorithm: algorithm) else {
                throw BootArgumentError(argument: whole, reason: "the digest is not hexadecimal")
            }
            self.init(id: id, format: .v2, insecure: insecure)
            return
        }
        // v<N>-<hash>-<log2 block size>:<hex>
        guard let colon = rest.firstIndex(of: ":") else {
            throw BootArgumentError(argument: whole, reason: "expected v<N>-<hash>-12:<hex>")
        }
        let descriptor = rest[..<colon].split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard descriptor.count == 2 else { throw BootArgumentError(argument: whole, reason: "expected v<N>-<hash>-12:<hex>") }
        let format: FormatVersion
        switch descriptor[0] {
        case "v1": format = .v1
        case "v2": format = .v2
        default: throw BootArgumentError(argument: whole, reason: "unsupported format version '\(descriptor[0])'")
        }
        guard let algorithm = FsVerityAlgorithm.allCases.first(where: { "\($0.name)-12" == descriptor[1] }) else {
            throw BootArgumentError(argument: whole, reason: "unsupported algorithm '\(descriptor[1])' (sha256-12 or sha512-12)")
        }
        let hex = rest[rest.index(after: colon)...]
        guard let id = ObjectID(hex: hex, algorithm: algorithm) else {
            throw BootArgumentError(
                argument: whole, reason: "expected \(algorithm.digestSize * 2) hex digits for \(algorithm.name), got '\(hex)'")
        }
        self.init(id: id, format: format, insecure: insecure)
    }

    /// Every composefs argument of a kernel command line, in order (an initramfs tries them
    /// in turn); one that does not parse is an error, not skipped.
    public static func all(in commandLine: String) throws(BootArgumentError) -> [BootArgument] {
        var found: [BootArgument] = []
        for parameter in KernelCommandLine.parameters(commandLine) {
            if let argument = try BootArgument(key: parameter.key, value: parameter.value) { found.append(argument) }
        }
        return found
    }
}

/// A composefs kernel argument that does not parse.
public struct BootArgumentError: Error, Equatable, Sendable, CustomStringConvertible {
    public var argument: String
    public var reason: String
    public var description: String { "invalid kernel argument \(argument): \(reason)" }
}

/// A kernel command line split as the kernel splits it (`next_arg` in lib/cmdline.c):
/// parameters separated by whitespace; double quotes protect whitespace and are removed where
/// they open the parameter or its value (and close it at its end); `--` ends the kernel's
/// parameters (the rest are init's).
public enum KernelCommandLine {
    public struct Parameter: Equatable, Sendable {
        public var key: String
        public var value: String?
        /// As written on the command line, quotes included.
        public var raw: String
    }

    public static func parameters(_ commandLine: String) -> [Parameter] {
        let bytes = Array(commandLine.utf8)
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }
        var parameters: [Parameter] = []
        var start = 0
        while true {
            while start < bytes.count && isSpace(bytes[start]) { start += 1 }
            guard start < bytes.count else { break }
            var end = start
            var inQuote = false
            while end < bytes.count && (inQuote || !isSpace(bytes[end])) {
                if bytes[end] == UInt8(ascii: "\"") { inQuote.toggle() }
                end += 1
            }
            let raw = Array(bytes[start..<end])
            var token = raw[...]
            let quoted = token.first == UInt8(ascii: "\"")
            if quoted { token = token.dropFirst() }
            var key: ArraySlice<UInt8>
            var value: ArraySlice<UInt8>?
            // The key's `=` is the first one after an opening quote; one right there is part of the key.
            if let split = token.firstIndex(of: UInt8(ascii: "=")), split > token.startIndex {
                key = token[..<split]
                var rest = token[(split + 1)...]
                if rest.first == UInt8(ascii: "\"") {
                    rest = rest.dropFirst()
                    if rest.last == UInt8(ascii: "\"") { rest = rest.dropLast() }
                } else if quoted && rest.last == UInt8(ascii: "\"") {
                    rest = rest.dropLast()
                }
                value = rest
            } else {
                key = token
                if quoted && key.last == UInt8(ascii: "\"") { key = key.dropLast() }
            }
            if value == nil && key.elementsEqual("--".utf8) { break }
            parameters.append(Parameter(
                key: String(decoding: key, as: UTF8.self), value: value.map { String(decoding: $0, as: UTF8.self) },
                raw: String(decoding: raw, as: UTF8.self)))
            start = end
        }
        return parameters
    }
}
