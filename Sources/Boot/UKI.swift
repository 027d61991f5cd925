// A Unified Kernel Image (Boot Loader Specification Type 2): an EFI stub with the kernel, its
// initrd, command line and os-release as PE sections. Read as composefs-rs 0.9 reads one: text
// sections must be UTF-8 and are taken whole (no trailing NUL or newline is dropped), and the
// boot label comes from `.osrel` by the specification's rules.

/// A UKI that cannot be read as such.
public enum UKIError: Error, Equatable, Sendable, CustomStringConvertible {
    case portableExecutable(PEError)
    case notUTF8(section: String)
    /// `.osrel` has none of PRETTY_NAME, NAME and ID.
    case noName

    public var description: String {
        switch self {
        case let .portableExecutable(error): error.description
        case let .notUTF8(section): "section '\(section)' is not UTF-8"
        case .noName: "no name information found in the .osrel section (PRETTY_NAME, NAME or ID)"
        }
    }
}

public struct UKI: Sendable {
    /// The kernel command line.
    public static let commandLineSection = ".cmdline"
    /// The os-release file of the system it boots.
    public static let osReleaseSection = ".osrel"
    /// The kernel.
    public static let linuxSection = ".linux"
    public static let initrdSection = ".initrd"
    /// The kernel version (`uname -r`).
    public static let unameSection = ".uname"
    public static let splashSection = ".splash"
    public static let deviceTreeSection = ".dtb"
    public static let sbatSection = ".sbat"

    public let file: PEFile

    public init(_ bytes: [UInt8]) throws(UKIError) {
        do { file = try PEFile(bytes) } catch { throw .portableExecutable(error) }
    }

    public func section(_ name: String) throws(UKIError) -> ArraySlice<UInt8> {
        do { return try file.section(name) } catch { throw .portableExecutable(error) }
    }

    /// A section as text.
    public func text(_ name: String) throws(UKIError) -> String {
        guard let text = String(validating: try section(name), as: UTF8.self) else { throw .notUTF8(section: name) }
        return text
    }

    public func commandLine() throws(UKIError) -> String { try text(Self.commandLineSection) }

    /// The label a boot menu shows: `.osrel`'s name and version (see `OSRelease.bootLabel`).
    public func bootLabel() throws(UKIError) -> String {
        guard let label = OSRelease(try text(Self.osReleaseSection)).bootLabel else { throw .noName }
        return label
    }
}
