// JSON values as composefs-rs prints them (serde_json's pretty printer: two-space indent,
// "key": value, map keys sorted), JSON string literals, and a strict RFC 8259 parser. No
// Foundation, so that the initramfs helper linking this module stays small and static.

public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// A number written without fraction or exponent that fits in 64 bits.
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    /// Members in the order they are to be printed.
    case object([(String, JSONValue)])

    /// Parses a JSON document; the error says why it is not one and where. Object members
    /// come out sorted by key (serde_json's default map), a repeated key keeping its last value.
    public static func parse(_ bytes: [UInt8]) throws(JSONError) -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        return try parser.document()
    }

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
        case let .number(value): return Self.format(value)
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

    /// Whole numbers below 1e15 with one decimal (printf's `%.1f`: `3.0`, `-0.0`), others in
    /// Swift's shortest form.
    private static func format(_ value: Double) -> String {
        guard value == value.rounded() && abs(value) < 1e15 else { return String(value) }
        let sign = value.sign == .minus ? "-" : ""
        return sign + String(Int64(abs(value))) + ".0"
    }
}

/// Bytes that are not the JSON expected, and why.
public struct JSONError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// A JSON string literal.
public func jsonString(_ text: String) -> String {
    let hexDigits = Array("0123456789abcdef".unicodeScalars)
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
        case let c where c.value < 0x20:
            result += "\\u00"
            result.unicodeScalars.append(hexDigits[Int(c.value >> 4)])
            result.unicodeScalars.append(hexDigits[Int(c.value & 0xf)])
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}

/// A recursive-descent reader over the bytes of one document.
private struct JSONParser {
    /// Deeper documents are refused rather than risking the stack.
    static let maximumDepth = 512

    let bytes: [UInt8]
    var offset = 0
    var depth = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func document() throws(JSONError) -> JSONValue {
        let value = try self.value()
        skipWhitespace()
        guard offset == bytes.count else { throw error("unexpected \(describe(offset)) after the document") }
        return value
    }

    private mutating func value() throws(JSONError) -> JSONValue {
        skipWhitespace()
        guard offset < bytes.count else { throw error("unexpected end of input, expected a value") }
        switch bytes[offset] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
        default: throw error("unexpected \(describe(offset)), expected a value")
        }
    }

    private mutating func object() throws(JSONError) -> JSONValue {
        try enter()
        offset += 1
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            offset += 1
        } else {
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw error("expected a member name, found \(describe(offset))") }
                let key = try string()
                try expect(":")
                members[key] = try value()
                skipWhitespace()
                if peek() == UInt8(ascii: ",") { offset += 1; continue }
                try expect("}")
                break
            }
        }
        depth -= 1
        return .object(members.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) })
    }

    private mutating func array() throws(JSONError) -> JSONValue {
        try enter()
        offset += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            offset += 1
        } else {
            while true {
                items.append(try value())
                skipWhitespace()
                if peek() == UInt8(ascii: ",") { offset += 1; continue }
                try expect("]")
                break
            }
        }
        depth -= 1
        return .array(items)
    }

    private mutating func enter() throws(JSONError) {
        depth += 1
        guard depth <= Self.maximumDepth else { throw error("nested more than \(Self.maximumDepth) levels deep") }
    }

    /// A string literal starting at the opening quote.
    private mutating func string() throws(JSONError) -> String {
        let start = offset
        offset += 1
        var scalars = String.UnicodeScalarView()
        var run = offset
        func flush(_ end: Int) throws(JSONError) {
            guard run < end else { return }
            guard let text = String(validating: bytes[run..<end], as: UTF8.self) else {
                throw error("invalid UTF-8 in the string starting at offset \(start)")
            }
            scalars.append(contentsOf: text.unicodeScalars)
        }
        while true {
            guard offset < bytes.count else { throw error("unterminated string starting at offset \(start)") }
            let byte = bytes[offset]
            switch byte {
            case UInt8(ascii: "\""):
                try flush(offset)
                offset += 1
                return String(scalars)
            case UInt8(ascii: "\\"):
                try flush(offset)
                scalars.append(try escape())
                run = offset
            case 0..<0x20:
                throw error("control character \(describe(offset)) in a string (it must be escaped)")
            default:
                offset += 1
            }
        }
    }

    /// The escape sequence at the backslash; a UTF-16 surrogate pair is read as one.
    private mutating func escape() throws(JSONError) -> Unicode.Scalar {
        let start = offset
        offset += 1
        guard offset < bytes.count else { throw error("unterminated escape at offset \(start)") }
        let letter = bytes[offset]
        offset += 1
        switch letter {
        case UInt8(ascii: "\""): return "\""
        case UInt8(ascii: "\\"): return "\\"
        case UInt8(ascii: "/"): return "/"
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "u"):
            let unit = try hexUnit(at: start)
            if (0xD800..<0xDC00).contains(unit) {
                guard peek() == UInt8(ascii: "\\"), offset + 1 < bytes.count, bytes[offset + 1] == UInt8(ascii: "u") else {
                    throw error("unpaired surrogate \\u\(String(unit, radix: 16)) at offset \(start)")
                }
                offset += 2
                let low = try hexUnit(at: start)
                guard (0xDC00..<0xE000).contains(low) else {
                    throw error("unpaired surrogate \\u\(String(unit, radix: 16)) at offset \(start)")
                }
                let combined = 0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00)
                guard let scalar = Unicode.Scalar(combined) else { throw error("invalid escape at offset \(start)") }
                return scalar
            }
            guard let scalar = Unicode.Scalar(unit) else {
                throw error("unpaired surrogate \\u\(String(unit, radix: 16)) at offset \(start)")
            }
            return scalar
        default:
            throw error("invalid escape '\\\(Character(Unicode.Scalar(letter)))' at offset \(start)")
        }
    }

    private mutating func hexUnit(at start: Int) throws(JSONError) -> UInt16 {
        guard offset + 4 <= bytes.count, let text = String(validating: bytes[offset..<(offset + 4)], as: UTF8.self),
            let unit = UInt16(text, radix: 16), !text.hasPrefix("+"), !text.hasPrefix("-")
        else { throw error("invalid \\u escape at offset \(start)") }
        offset += 4
        return unit
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func number() throws(JSONError) -> JSONValue {
        let start = offset
        func digits() -> Int {
            let first = offset
            while offset < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) { offset += 1 }
            return offset - first
        }
        if peek() == UInt8(ascii: "-") { offset += 1 }
        let integerStart = offset
        guard digits() > 0 else { throw error("invalid number at offset \(start)") }
        guard bytes[integerStart] != UInt8(ascii: "0") || offset - integerStart == 1 else {
            throw error("invalid number at offset \(start) (leading zero)")
        }
        var whole = true
        if peek() == UInt8(ascii: ".") {
            offset += 1
            whole = false
            guard digits() > 0 else { throw error("invalid number at offset \(start)") }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            offset += 1
            whole = false
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { offset += 1 }
            guard digits() > 0 else { throw error("invalid number at offset \(start)") }
        }
        let text = String(decoding: bytes[start..<offset], as: UTF8.self)
        if whole, let integer = Int64(text) { return .integer(integer) }
        guard let number = Double(text), number.isFinite else { throw error("number \(text) at offset \(start) is out of range") }
        return .number(number)
    }

    private mutating func literal(_ word: String) throws(JSONError) {
        let expected = Array(word.utf8)
        guard offset + expected.count <= bytes.count, Array(bytes[offset..<(offset + expected.count)]) == expected else {
            throw error("unexpected \(describe(offset)), expected a value")
        }
        offset += expected.count
    }

    private mutating func expect(_ character: Unicode.Scalar) throws(JSONError) {
        skipWhitespace()
        guard peek() == UInt8(character.value) else { throw error("expected '\(character)', found \(describe(offset))") }
        offset += 1
    }

    private func peek() -> UInt8? { offset < bytes.count ? bytes[offset] : nil }

    private mutating func skipWhitespace() {
        while offset < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[offset]) { offset += 1 }
    }

    /// The byte at `position` as shown in errors: `'x' at offset N`, or the end of input.
    private func describe(_ position: Int) -> String {
        guard position < bytes.count else { return "end of input" }
        let byte = bytes[position]
        let shown = (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(Hex.encode([byte]))"
        return "\(shown) at offset \(position)"
    }

    private func error(_ reason: String) -> JSONError { JSONError(reason: reason) }
}
