// What to mount and how: the options of mount.composefs(8), as a value.

import ComposeFSBase
import FsVerity

/// Whether overlayfs must check each backing file's fs-verity digest against the image.
public enum VerityPolicy: Sendable, Equatable {
    /// No verification (the default).
    case off
    /// Verify where the kernel and the base directories' file system can; otherwise mount
    /// without verification (`tryverity`).
    case ifSupported
    /// Verify, and refuse to mount where that cannot be enforced (`verity`, implied by `digest=`).
    case required
}

public struct MountOptions: Sendable, Equatable {
    /// Object stores holding the backing files, searched in order.
    public var basedirs: [String]
    /// The fs-verity digest (hex) the image file must have; implies `.required` verity.
    public var expectedDigest: String?
    public var verity: VerityPolicy
    public var readOnly: Bool
    /// Writable overlay on top of the image; both or neither.
    public var upperdir: String?
    public var workdir: String?
    /// A user namespace file (e.g. /proc/PID/ns/user) whose ID mapping the mount gets.
    public var idmapUserNamespace: String?
    /// The overlayfs mount's source, as mountinfo shows it.
    public var source: String

    public init(
        basedirs: [String], expectedDigest: String? = nil, verity: VerityPolicy = .off,
        readOnly: Bool = false, upperdir: String? = nil, workdir: String? = nil,
        idmapUserNamespace: String? = nil, source: String = "composefs"
    ) {
        self.source = source
        self.basedirs = basedirs
        self.expectedDigest = expectedDigest
        self.verity = expectedDigest == nil ? verity : .required
        self.readOnly = readOnly
        self.upperdir = upperdir
        self.workdir = workdir
        self.idmapUserNamespace = idmapUserNamespace
    }

    /// Parses a mount(8) option string such as `basedir=/a:/b,verity,ro`. Values may escape
    /// `,` and `\` with a backslash; `basedir` takes several directories separated by `:`.
    public init(parsing optionString: String) throws(MountError) {
        var basedir: String?
        var digest: String?
        var verity = false
        var tryVerity = false
        var readOnly = false
        var upperdir: String?
        var workdir: String?
        var idmap: String?
        for (key, value) in Self.splitOptions(optionString) {
            func required() throws(MountError) -> String {
                guard let value else { throw .invalidOptions("No value specified for \(key) option") }
                return value
            }
            switch key {
            case "basedir": basedir = try required()
            case "digest": digest = try required()
            case "verity": verity = true
            case "tryverity": tryVerity = true
            case "upperdir": upperdir = try required()
            case "workdir": workdir = try required()
            case "idmap": idmap = try required()
            case "ro": readOnly = true
            case "rw": readOnly = false
            default: throw .invalidOptions("Unsupported option \(key)")
            }
        }
        var basedirs: [String] = []
        if let basedir {
            basedirs = basedir.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard !basedirs.contains(where: \.isEmpty) else {
                throw .invalidOptions("Value for basedir option has incorrect format")
            }
        }
        self.init(
            basedirs: basedirs, expectedDigest: digest,
            verity: verity ? .required : tryVerity ? .ifSupported : .off,
            readOnly: readOnly, upperdir: upperdir, workdir: workdir, idmapUserNamespace: idmap)
        try validate()
    }

    /// Checks the combination of options, before anything is opened or mounted.
    public func validate() throws(MountError) {
        guard !basedirs.isEmpty else { throw .invalidOptions("No object dirs specified") }
        guard (upperdir == nil) == (workdir == nil) else {
            throw .invalidOptions("Both workdir and upperdir must be specified if used")
        }
        if let expectedDigest {
            _ = try Self.decodeDigest(expectedDigest)
        }
    }

    /// A SHA-256 or SHA-512 fs-verity digest.
    static func decodeDigest(_ hex: String) throws(MountError) -> ObjectID {
        guard let id = Hex.decode(hex).flatMap({ ObjectID(digest: $0) }) else {
            throw .invalidOptions("Invalid digest '\(hex)': expected 64 or 128 hex digits")
        }
        return id
    }

    /// Splits at unescaped commas; the first `=` separates key and value, and a backslash
    /// makes the next character literal in the value.
    static func splitOptions(_ string: String) -> [(key: String, value: String?)] {
        var result: [(String, String?)] = []
        var key: [UInt8] = []
        var value: [UInt8]?
        var bytes = string.utf8.makeIterator()
        func finish() {
            result.append((String(decoding: key, as: UTF8.self), value.map { String(decoding: $0, as: UTF8.self) }))
            key = []
            value = nil
        }
        while let byte = bytes.next() {
            switch byte {
            case UInt8(ascii: ","):
                finish()
            case UInt8(ascii: "=") where value == nil:
                value = []
            case UInt8(ascii: "\\"):
                guard let escaped = bytes.next() else { break }
                if value != nil { value?.append(escaped) } else { key += [byte, escaped] }
            default:
                if value != nil { value?.append(byte) } else { key.append(byte) }
            }
        }
        if !string.isEmpty { finish() }
        return result
    }
}
