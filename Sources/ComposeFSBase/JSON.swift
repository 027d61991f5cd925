// JSON values as composefs-rs prints them (serde_json's pretty printer: two-space indent,
// "key": value, map keys sorted), and JSON string literals.

import Foundation

public indirect enum JSONValue: Decodable, Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    /// Members in the order they are to be printed.
    case object([(String, JSONValue)])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            // Sorted, as serde_json's default map.
            let members = try container.decode([String: JSONValue].self)
            self = .object(members.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) })
        }
    }

    /// Parses a JSON document; the error says why it is not one.
    public static func parse(_ bytes: [UInt8]) throws(JSONError) -> JSONValue { try decodeJSON(JSONValue.self, bytes) }

    public static func == (a: JSONValue, b: JSONValue) -> Bool { a.pretty() == b.pretty() }

    /// The member `key` of an object.
    public subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    /// serde_json's `to_string_pretty`.
    public func pretty(indent: String = "") -> String {
        let inner = indent + "  "
        switch self {
        case .null: return "null"
        case let .bool(value): return value ? "true" : "false"
        case let .integer(value): return String(value)
        case let .number(value): return value == value.rounded() && abs(value) < 1e15 ? String(format: "%.1f", value) : String(value)
        case let .string(value): return jsonString(value)
        case let .array(items):
            if items.isEmpty { return "[]" }
            return "[\n" + items.map { inner + $0.pretty(indent: inner) }.joined(separator: ",\n") + "\n" + indent + "]"
        case let .object(members):
            if members.isEmpty { return "{}" }
            return "{\n" + members.map { inner + jsonString($0.0) + ": " + $0.1.pretty(indent: inner) }.joined(separator: ",\n")
                + "\n" + indent + "}"
        }
    }
}

/// Decodes a JSON document into `type`.
public func decodeJSON<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(JSONError) -> T {
    do {
        return try JSONDecoder().decode(T.self, from: Data(bytes))
    } catch let DecodingError.dataCorrupted(context) {
        throw JSONError(reason: context.debugDescription)
    } catch let DecodingError.keyNotFound(key, _) {
        throw JSONError(reason: "missing field '\(key.stringValue)'")
    } catch let DecodingError.typeMismatch(_, context) {
        throw JSONError(reason: "wrong type at '\(context.codingPath.map(\.stringValue).joined(separator: "."))'")
    } catch {
        throw JSONError(reason: "not valid JSON")
    }
}

/// Bytes that are not the JSON expected, and why.
public struct JSONError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}

/// A JSON string literal.
public func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case "\u{08}": result += "\\b"
        case "\u{0C}": result += "\\f"
        case let c where c.value < 0x20: result += String(format: "\\u%04x", c.value)
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}
