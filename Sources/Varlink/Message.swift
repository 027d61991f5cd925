// The varlink wire format (https://varlink.org/Method-Call): every message is one JSON object
// followed by a NUL byte. A call is {"method": "iface.Method", "parameters": {...}, "more": bool,
// "oneway": bool}; a reply is {"parameters": {...}, "continues": bool} or, for an error,
// {"error": "iface.ErrorName", "parameters": {...}}.

import ComposeFSBase

/// An error reply: a qualified error name and its parameters.
public struct VarlinkError: Error, Sendable, CustomStringConvertible {
    public var name: String
    public var parameters: [(String, JSONValue)]

    public init(_ name: String, _ parameters: [(String, JSONValue)] = []) {
        self.name = name
        self.parameters = parameters
    }

    public var description: String { name + " " + JSONValue.object(parameters).compactText }

    // The errors of org.varlink.service, which every service may answer with.
    public static func interfaceNotFound(_ interface: String) -> VarlinkError {
        VarlinkError("org.varlink.service.InterfaceNotFound", [("interface", .string(interface))])
    }

    public static func methodNotFound(_ method: String) -> VarlinkError {
        VarlinkError("org.varlink.service.MethodNotFound", [("method", .string(method))])
    }

    /// A parameter that is missing, of the wrong type or out of range; also what a message that
    /// is no call at all gets (naming the part of the message at fault, "" for the whole).
    public static func invalidParameter(_ parameter: String) -> VarlinkError {
        VarlinkError("org.varlink.service.InvalidParameter", [("parameter", .string(parameter))])
    }
}

/// A method call as received.
public struct VarlinkCall: Sendable {
    /// The qualified method name, `interface.Method`.
    public var method: String
    public var parameters: VarlinkParameters
    /// The client accepts several replies (`continues`), the last without.
    public var more: Bool
    /// The client wants no reply.
    public var oneway: Bool

    public init(method: String, parameters: VarlinkParameters = VarlinkParameters([]), more: Bool = false, oneway: Bool = false) {
        self.method = method
        self.parameters = parameters
        self.more = more
        self.oneway = oneway
    }

    /// The interface part of the method name (everything before the last '.').
    public var interface: String {
        guard let dot = method.lastIndex(of: ".") else { return "" }
        return String(method[..<dot])
    }

    /// Parses one message (without its NUL). Whatever is no well-formed call is an
    /// InvalidParameter error naming the member at fault.
    public init(decoding bytes: [UInt8]) throws(VarlinkError) {
        let document: JSONValue
        do { document = try JSONValue.parse(bytes) } catch { throw .invalidParameter("") }
        guard case .object = document else { throw .invalidParameter("") }
        guard case let .string(method)? = document["method"], Self.isQualifiedName(method) else {
            throw .invalidParameter("method")
        }
        var parameters: [(String, JSONValue)] = []
        switch document["parameters"] {
        case nil, .null?: break
        case let .object(values)?: parameters = values
        default: throw .invalidParameter("parameters")
        }
        func flag(_ key: String) throws(VarlinkError) -> Bool {
            switch document[key] {
            case nil, .null?: return false
            case let .bool(value)?: return value
            default: throw .invalidParameter(key)
            }
        }
        self.init(method: method, parameters: VarlinkParameters(parameters), more: try flag("more"), oneway: try flag("oneway"))
    }

    /// `reverse.domain.Name`: at least two dot-separated parts of letters, digits, '-' and '_'.
    static func isQualifiedName(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count >= 2
            && parts.allSatisfy { part in
                !part.isEmpty && part.utf8.allSatisfy { byte in
                    (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                        || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
                }
            }
    }

    /// The call as a client sends it (without the NUL).
    public var encoded: [UInt8] {
        var members: [(String, JSONValue)] = [("method", .string(method))]
        if !parameters.members.isEmpty { members.append(("parameters", .object(parameters.members))) }
        if more { members.append(("more", .bool(true))) }
        if oneway { members.append(("oneway", .bool(true))) }
        return Array(JSONValue.object(members).compactText.utf8)
    }
}

/// A reply as sent, or as a client receives it.
public enum VarlinkReply: Sendable {
    /// `continues` is nil where the call did not ask for more replies.
    case parameters([(String, JSONValue)], continues: Bool?)
    case error(VarlinkError)

    /// The reply's JSON (without the NUL).
    public var encoded: [UInt8] {
        var members: [(String, JSONValue)]
        switch self {
        case let .parameters(parameters, continues):
            members = [("parameters", .object(parameters))]
            if let continues { members.append(("continues", .bool(continues))) }
        case let .error(error):
            members = [("error", .string(error.name)), ("parameters", .object(error.parameters))]
        }
        return Array(JSONValue.object(members).compactText.utf8)
    }

    /// Parses a reply (for clients).
    public init(decoding bytes: [UInt8]) throws(VarlinkError) {
        let document: JSONValue
        do { document = try JSONValue.parse(bytes) } catch { throw .invalidParameter("") }
        var parameters: [(String, JSONValue)] = []
        if case let .object(values)? = document["parameters"] { parameters = values }
        if case let .string(name)? = document["error"] {
            self = .error(VarlinkError(name, parameters))
            return
        }
        var continues: Bool?
        if case let .bool(value)? = document["continues"] { continues = value }
        self = .parameters(parameters, continues: continues)
    }
}

/// The parameters of a call, read by name and type. A null value counts as absent; a missing,
/// null or mistyped required parameter, or a mistyped optional one, is InvalidParameter.
public struct VarlinkParameters: Sendable {
    public let members: [(String, JSONValue)]

    public init(_ members: [(String, JSONValue)]) { self.members = members }

    /// The value of `name`, nil when absent or null.
    public func value(_ name: String) -> JSONValue? {
        guard let value = members.first(where: { $0.0 == name })?.1, value != .null else { return nil }
        return value
    }

    public func optionalString(_ name: String) throws(VarlinkError) -> String? {
        guard let value = value(name) else { return nil }
        guard case let .string(text) = value else { throw .invalidParameter(name) }
        return text
    }

    public func string(_ name: String) throws(VarlinkError) -> String {
        guard let text = try optionalString(name) else { throw .invalidParameter(name) }
        return text
    }

    public func optionalBool(_ name: String) throws(VarlinkError) -> Bool? {
        guard let value = value(name) else { return nil }
        guard case let .bool(flag) = value else { throw .invalidParameter(name) }
        return flag
    }

    public func bool(_ name: String) throws(VarlinkError) -> Bool {
        guard let flag = try optionalBool(name) else { throw .invalidParameter(name) }
        return flag
    }

    /// A non-negative integer (varlink's `int`, used for u64 values).
    public func unsigned(_ name: String) throws(VarlinkError) -> UInt64 {
        switch value(name) {
        case let .integer(number)? where number >= 0: return UInt64(number)
        case let .number(number)? where number >= 0 && number == number.rounded() && number < 0x1p63: return UInt64(number)
        default: throw .invalidParameter(name)
        }
    }

    public func strings(_ name: String) throws(VarlinkError) -> [String] {
        guard case let .array(items)? = value(name) else { throw .invalidParameter(name) }
        var result: [String] = []
        for item in items {
            guard case let .string(text) = item else { throw .invalidParameter(name) }
            result.append(text)
        }
        return result
    }

    /// An array of objects (varlink's `[]Type` of a struct type).
    public func objects(_ name: String) throws(VarlinkError) -> [VarlinkParameters] {
        guard case let .array(items)? = value(name) else { throw .invalidParameter(name) }
        var result: [VarlinkParameters] = []
        for item in items {
            guard case let .object(values) = item else { throw .invalidParameter(name) }
            result.append(VarlinkParameters(values))
        }
        return result
    }

    public func object(_ name: String) throws(VarlinkError) -> VarlinkParameters {
        guard case let .object(values)? = value(name) else { throw .invalidParameter(name) }
        return VarlinkParameters(values)
    }
}

extension JSONValue {
    /// The value as JSON without insignificant whitespace.
    public var compactText: String {
        var text = ""
        appendCompact(to: &text)
        return text
    }

    private func appendCompact(to text: inout String) {
        switch self {
        case .null: text += "null"
        case let .bool(value): text += value ? "true" : "false"
        case let .integer(value): text += String(value)
        case let .number(value): text += value.isFinite ? String(value) : "null"
        case let .string(value): text += jsonString(value)
        case let .array(items):
            text += "["
            for (index, item) in items.enumerated() {
                if index > 0 { text += "," }
                item.appendCompact(to: &text)
            }
            text += "]"
        case let .object(members):
            text += "{"
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { text += "," }
                text += jsonString(key) + ":"
                value.appendCompact(to: &text)
            }
            text += "}"
        }
    }
}
