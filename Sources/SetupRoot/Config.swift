// The setup-root configuration file (/usr/lib/composefs/setup-root-conf.toml), as composefs-rs
// 0.9 reads it, with bootc's aliases:
//
//     [root]
//     transient = true          # a tmpfs overlay over the whole image
//     [etc]                     # and [var]
//     mount = "overlay"         # none (alias root) | bind | overlay | transient (alias volatile)
//     transient = true          # mount = "transient", unless mount is given
//
// Other tables and keys are ignored; the file must still be valid TOML.

#if canImport(Glibc)
import Glibc
#endif
import ComposeFSBase

/// How a directory of the new root gets its deployment state.
public enum StateMount: String, Sendable, Equatable, CaseIterable {
    /// The image's directory, read-only.
    case none
    /// The state directory itself.
    case bind
    /// The image's directory with the state directory's `upper`/`work` as a writable layer.
    case overlay
    /// The image's directory with a tmpfs as the writable layer: writes vanish at reboot.
    case transient

    /// bootc's names for the same modes.
    static let aliases: [String: StateMount] = ["root": .none, "volatile": .transient]
}

public struct SetupRootConfig: Sendable, Equatable {
    public static let defaultPath = "/usr/lib/composefs/setup-root-conf.toml"

    /// A tmpfs overlay over the whole image.
    public var transientRoot = false
    public var etc: StateMount = .overlay
    public var `var`: StateMount = .bind

    public init(transientRoot: Bool = false, etc: StateMount = .overlay, `var`: StateMount = .bind) {
        self.transientRoot = transientRoot
        self.etc = etc
        self.var = `var`
    }

    /// The configuration in `path`; the defaults when there is no such file.
    public static func load(path: String) throws(SetupRootError) -> SetupRootConfig {
        let bytes: [UInt8]?
        do throws(SystemError) { bytes = try readFile(path) } catch { throw .configUnreadable(error) }
        guard let bytes else { return SetupRootConfig() }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .invalidConfig(path: path, line: nil, reason: "not UTF-8 text")
        }
        return try SetupRootConfig(parsing: text, path: path)
    }

    public init(parsing text: String, path: String) throws(SetupRootError) {
        let document: [String: TOMLValue]
        do throws(TOMLError) { document = try TOMLParser.parse(text) } catch {
            throw .invalidConfig(path: path, line: error.line, reason: error.reason)
        }
        func table(_ name: String) throws(SetupRootError) -> [String: TOMLValue] {
            switch document[name] {
            case nil: return [:]
            case let .table(members)?: return members
            case let value?: throw .invalidConfig(path: path, line: nil, reason: "[\(name)] is a \(value.typeName), not a table")
            }
        }
        func flag(_ table: [String: TOMLValue], _ section: String) throws(SetupRootError) -> Bool {
            switch table["transient"] {
            case nil: return false
            case let .boolean(value)?: return value
            case let value?: throw .invalidConfig(path: path, line: nil, reason: "\(section).transient is a \(value.typeName), not a boolean")
            }
        }
        func mount(_ section: String, default: StateMount) throws(SetupRootError) -> StateMount {
            let members = try table(section)
            let transient = try flag(members, section)
            switch members["mount"] {
            case nil: return transient ? .transient : `default`
            case let .string(name)?:
                guard let mode = StateMount(rawValue: name) ?? StateMount.aliases[name] else {
                    let names = (StateMount.allCases.map(\.rawValue) + StateMount.aliases.keys.sorted()).joined(separator: ", ")
                    throw .invalidConfig(path: path, line: nil, reason: "\(section).mount '\(name)' is not one of \(names)")
                }
                return mode
            case let value?:
                throw .invalidConfig(path: path, line: nil, reason: "\(section).mount is a \(value.typeName), not a string")
            }
        }
        transientRoot = try flag(try table("root"), "root")
        etc = try mount("etc", default: .overlay)
        `var` = try mount("var", default: .bind)
    }
}
