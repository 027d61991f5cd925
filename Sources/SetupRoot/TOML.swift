// A TOML 1.0 reader for the setup-root configuration file: the whole syntax is read (so any
// valid file parses, whatever other tables and keys it has), values come out as a tree.

/// A TOML value. Dates and times are kept as written: nothing here reads them.
enum TOMLValue: Equatable {
    case string(String)
    case integer(Int64)
    case float(Double)
    case boolean(Bool)
    case dateTime(String)
    case array([TOMLValue])
    case table([String: TOMLValue])

    /// The type's name as TOML documents call it, for errors.
    var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .boolean: "boolean"
        case .dateTime: "date-time"
        case .array: "array"
        case .table: "table"
        }
    }
}

/// Text that is not TOML, with the line (from 1) where reading stopped.
struct TOMLError: Error, Equatable {
    var line: Int
    var reason: String
}

struct TOMLParser {
    private let bytes: [UInt8]
    private var offset = 0
    private var line = 1
    private var root: [String: TOMLValue] = [:]
    /// The table that key/value lines go into (the last header).
    private var currentTable: [String] = []
    /// Tables named by a `[header]`, which may not be named again.
    private var headerTables: Set<[String]> = []

    /// The document's top-level table.
    static func parse(_ text: String) throws(TOMLError) -> [String: TOMLValue] {
        var parser = TOMLParser(bytes: Array(text.utf8))
        try parser.document()
        return parser.root
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private mutating func document() throws(TOMLError) {
        while true {
            skipSpaces()
            guard let byte = peek() else { return }
            switch byte {
            case UInt8(ascii: "#"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                break
            case UInt8(ascii: "["):
                try header()
            default:
                let key = try self.key()
                try expect("=")
                let value = try self.value()
                try insert(value, at: currentTable + key)
            }
            try endOfLine()
        }
    }

    // MARK: Tables

    /// `[a.b]` or `[[a.b]]` (a new element of an array of tables).
    private mutating func header() throws(TOMLError) {
        offset += 1
        let isArray = peek() == UInt8(ascii: "[")
        if isArray { offset += 1 }
        skipSpaces()
        let path = try key()
        try expect("]")
        if isArray {
            guard peek() == UInt8(ascii: "]") else { throw error("expected ']]' to close the array of tables header") }
            offset += 1
            try appendTable(at: path)
        } else {
            guard headerTables.insert(path).inserted else { throw error("table [\(path.joined(separator: "."))] is defined twice") }
            try Self.descend(&root, path[...], path: path, line: line) { (_: inout [String: TOMLValue]) throws(TOMLError) in }
        }
        currentTable = path
    }

    private mutating func appendTable(at path: [String]) throws(TOMLError) {
        guard let last = path.last else { throw error("empty table name") }
        let line = self.line
        try Self.descend(&root, path.dropLast(), path: path, line: line) { (table: inout [String: TOMLValue]) throws(TOMLError) in
            switch table[last] {
            case nil: table[last] = .array([.table([:])])
            case var .array(items)?:
                guard items.allSatisfy({ if case .table = $0 { true } else { false } }) else {
                    throw TOMLError(line: line, reason: "key '\(path.joined(separator: "."))' is an array of values, not of tables")
                }
                items.append(.table([:]))
                table[last] = .array(items)
            case let value?:
                throw TOMLError(line: line, reason: "key '\(path.joined(separator: "."))' is already a \(value.typeName)")
            }
        }
    }

    /// A key/value pair; keys may not be given twice.
    private mutating func insert(_ value: TOMLValue, at path: [String]) throws(TOMLError) {
        guard let last = path.last else { throw error("empty key") }
        let line = self.line
        try Self.descend(&root, path.dropLast(), path: path, line: line) { (table: inout [String: TOMLValue]) throws(TOMLError) in
            guard table[last] == nil else { throw TOMLError(line: line, reason: "key '\(path.joined(separator: "."))' is defined twice") }
            table[last] = value
        }
    }

    /// Runs `body` on the table at `keys` below `table`, creating missing tables; an array of
    /// tables stands for its last element.
    private static func descend(
        _ table: inout [String: TOMLValue], _ keys: ArraySlice<String>, path: [String], line: Int,
        _ body: (inout [String: TOMLValue]) throws(TOMLError) -> Void
    ) throws(TOMLError) {
        guard let key = keys.first else {
            try body(&table)
            return
        }
        switch table[key] ?? .table([:]) {
        case var .table(child):
            try descend(&child, keys.dropFirst(), path: path, line: line, body)
            table[key] = .table(child)
        case .array(var items):
            guard case var .table(child)? = items.last else {
                throw TOMLError(line: line, reason: "key '\(key)' in '\(path.joined(separator: "."))' is an array, not a table")
            }
            try descend(&child, keys.dropFirst(), path: path, line: line, body)
            items[items.count - 1] = .table(child)
            table[key] = .array(items)
        case let value:
            throw TOMLError(line: line, reason: "key '\(key)' in '\(path.joined(separator: "."))' is a \(value.typeName), not a table")
        }
    }

    // MARK: Keys

    /// A dotted key: bare or quoted parts separated by dots.
    private mutating func key() throws(TOMLError) -> [String] {
        var parts: [String] = []
        while true {
            skipSpaces()
            switch peek() {
            case UInt8(ascii: "\"")?:
                offset += 1
                parts.append(try basicString())
            case UInt8(ascii: "'")?:
                offset += 1
                parts.append(try literalString())
            default:
                let start = offset
                while let byte = peek(), Self.isBareKey(byte) { offset += 1 }
                guard offset > start else { throw error("expected a key, found \(describe())") }
                parts.append(String(decoding: bytes[start..<offset], as: UTF8.self))
            }
            skipSpaces()
            guard peek() == UInt8(ascii: ".") else { return parts }
            offset += 1
        }
    }

    private static func isBareKey(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    // MARK: Values

    private mutating func value() throws(TOMLError) -> TOMLValue {
        skipSpaces()
        guard let byte = peek() else { throw error("expected a value, found the end of the file") }
        switch byte {
        case UInt8(ascii: "\""):
            if starts(with: "\"\"\"") {
                offset += 3
                return .string(try multilineBasicString())
            }
            offset += 1
            return .string(try basicString())
        case UInt8(ascii: "'"):
            if starts(with: "'''") {
                offset += 3
                return .string(try multilineLiteralString())
            }
            offset += 1
            return .string(try literalString())
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "{"): return try inlineTable()
        default: return try scalar()
        }
    }

    private mutating func array() throws(TOMLError) -> TOMLValue {
        offset += 1
        var items: [TOMLValue] = []
        while true {
            try skipBlankLines()
            if peek() == UInt8(ascii: "]") { break }
            items.append(try value())
            try skipBlankLines()
            if peek() == UInt8(ascii: ",") {
                offset += 1
                continue
            }
            guard peek() == UInt8(ascii: "]") else { throw error("expected ',' or ']' in an array, found \(describe())") }
            break
        }
        offset += 1
        return .array(items)
    }

    private mutating func inlineTable() throws(TOMLError) -> TOMLValue {
        offset += 1
        var table: [String: TOMLValue] = [:]
        skipSpaces()
        if peek() == UInt8(ascii: "}") {
            offset += 1
            return .table(table)
        }
        while true {
            let path = try key()
            try expect("=")
            let value = try self.value()
            guard let last = path.last else { throw error("empty key") }
            let line = self.line
            try Self.descend(&table, path.dropLast(), path: path, line: line) { (inner: inout [String: TOMLValue]) throws(TOMLError) in
                guard inner[last] == nil else { throw TOMLError(line: line, reason: "key '\(path.joined(separator: "."))' is defined twice") }
                inner[last] = value
            }
            skipSpaces()
            if peek() == UInt8(ascii: ",") {
                offset += 1
                continue
            }
            try expect("}")
            return .table(table)
        }
    }

    /// Booleans, numbers, dates and times: one run of non-separator characters (a date and
    /// a time may be separated by one space).
    private mutating func scalar() throws(TOMLError) -> TOMLValue {
        let start = offset
        func isScalarByte(_ byte: UInt8) -> Bool {
            Self.isBareKey(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
        }
        while let byte = peek(), isScalarByte(byte) { offset += 1 }
        if offset - start == 10, peek() == UInt8(ascii: " "), offset + 3 < bytes.count,
            Self.isDigit(bytes[offset + 1]), Self.isDigit(bytes[offset + 2]), bytes[offset + 3] == UInt8(ascii: ":")
        {
            offset += 1
            while let byte = peek(), isScalarByte(byte) { offset += 1 }
        }
        let token = String(decoding: bytes[start..<offset], as: UTF8.self)
        guard !token.isEmpty else { throw error("expected a value, found \(describe())") }
        switch token {
        case "true": return .boolean(true)
        case "false": return .boolean(false)
        case "inf", "+inf": return .float(.infinity)
        case "-inf": return .float(-.infinity)
        case "nan", "+nan", "-nan": return .float(.nan)
        default: break
        }
        let utf8 = Array(token.utf8)
        if utf8.count >= 8 && utf8[4] == UInt8(ascii: "-") || utf8.count >= 5 && utf8[2] == UInt8(ascii: ":") {
            guard utf8.allSatisfy({ Self.isDigit($0) || Array("-:.+TtZz ".utf8).contains($0) }) else {
                throw error("invalid date-time '\(token)'")
            }
            return .dateTime(token)
        }
        if let integer = Self.integer(token) { return .integer(integer) }
        if let float = Self.float(token) { return .float(float) }
        throw error("invalid value '\(token)'")
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    /// Underscores only between digits.
    private static func removingUnderscores(_ digits: Substring) -> String? {
        let utf8 = Array(digits.utf8)
        for (index, byte) in utf8.enumerated() where byte == UInt8(ascii: "_") {
            guard index > 0, index < utf8.count - 1, utf8[index - 1] != UInt8(ascii: "_"),
                utf8[index + 1] != UInt8(ascii: "_"), utf8[index - 1] != UInt8(ascii: "."), utf8[index + 1] != UInt8(ascii: ".")
            else { return nil }
        }
        return String(digits.filter { $0 != "_" })
    }

    private static func integer(_ token: String) -> Int64? {
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where token.hasPrefix(prefix) {
            let digits = token.dropFirst(2)
            guard let first = digits.first, first != "_", first != "+", first != "-", let clean = removingUnderscores(digits) else {
                return nil
            }
            return Int64(clean, radix: radix)
        }
        var digits = Substring(token)
        if digits.first == "+" || digits.first == "-" { digits = digits.dropFirst() }
        guard let first = digits.first, first.isASCII, first.isNumber, digits.count == 1 || first != "0",
            digits.allSatisfy({ $0 == "_" || ($0.isASCII && $0.isNumber) }),
            let clean = removingUnderscores(token.first == "+" ? Substring(token.dropFirst()) : Substring(token))
        else { return nil }
        return Int64(clean)
    }

    /// A decimal float: digits on both sides of a `.`, an optional exponent.
    private static func float(_ token: String) -> Double? {
        var rest = Substring(token)
        if rest.first == "+" || rest.first == "-" { rest = rest.dropFirst() }
        let mantissaEnd = rest.firstIndex(where: { $0 == "e" || $0 == "E" }) ?? rest.endIndex
        let mantissa = rest[..<mantissaEnd]
        let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, parts.allSatisfy({ !$0.isEmpty }), let whole = parts.first,
            whole.count == 1 || whole.first != "0",
            mantissaEnd != rest.endIndex || parts.count == 2
        else { return nil }
        guard let clean = removingUnderscores(Substring(token)), let value = Double(clean) else { return nil }
        return value
    }

    // MARK: Strings

    /// A "basic" string after its opening quote.
    private mutating func basicString() throws(TOMLError) -> String {
        var scalars = String.UnicodeScalarView()
        while true {
            guard let byte = peek(), byte != UInt8(ascii: "\n") else { throw error("unterminated string") }
            switch byte {
            case UInt8(ascii: "\""):
                offset += 1
                return String(scalars)
            case UInt8(ascii: "\\"):
                scalars.append(try escape())
            default:
                try appendCharacter(to: &scalars, multiline: false)
            }
        }
    }

    /// A """multi-line""" basic string after its opening quotes; a newline right after them is
    /// dropped, and a backslash at the end of a line removes the line break and the spaces after it.
    private mutating func multilineBasicString() throws(TOMLError) -> String {
        try skipFirstNewline()
        var scalars = String.UnicodeScalarView()
        while true {
            guard let byte = peek() else { throw error("unterminated multi-line string") }
            if closesMultilineString(quote: "\"", appendingTo: &scalars) { return String(scalars) }
            if byte == UInt8(ascii: "\\") {
                var look = offset + 1
                while look < bytes.count, bytes[look] == UInt8(ascii: " ") || bytes[look] == UInt8(ascii: "\t") { look += 1 }
                if look < bytes.count, bytes[look] == UInt8(ascii: "\n") || bytes[look] == UInt8(ascii: "\r") {
                    offset = look
                    try skipBlankSpaceAndNewlines()
                    continue
                }
                scalars.append(try escape())
                continue
            }
            try appendCharacter(to: &scalars, multiline: true)
        }
    }

    /// A 'literal' string after its opening quote: no escapes.
    private mutating func literalString() throws(TOMLError) -> String {
        var scalars = String.UnicodeScalarView()
        while true {
            guard let byte = peek(), byte != UInt8(ascii: "\n") else { throw error("unterminated string") }
            if byte == UInt8(ascii: "'") {
                offset += 1
                return String(scalars)
            }
            try appendCharacter(to: &scalars, multiline: false)
        }
    }

    private mutating func multilineLiteralString() throws(TOMLError) -> String {
        try skipFirstNewline()
        var scalars = String.UnicodeScalarView()
        while true {
            guard peek() != nil else { throw error("unterminated multi-line string") }
            if closesMultilineString(quote: "'", appendingTo: &scalars) { return String(scalars) }
            try appendCharacter(to: &scalars, multiline: true)
        }
    }

    /// At three `quote`s, consumes them and up to two more quotes, which belong to the string
    /// (four quotes end a string with one quote); says whether the string ended.
    private mutating func closesMultilineString(
        quote: Unicode.Scalar, appendingTo scalars: inout String.UnicodeScalarView
    ) -> Bool {
        guard starts(with: String(repeating: String(quote), count: 3)) else { return false }
        offset += 3
        for _ in 0..<2 where peek() == UInt8(ascii: quote) {
            scalars.append(quote)
            offset += 1
        }
        return true
    }

    private mutating func skipFirstNewline() throws(TOMLError) {
        if starts(with: "\r\n") {
            offset += 2
            line += 1
        } else if peek() == UInt8(ascii: "\n") {
            offset += 1
            line += 1
        }
    }

    /// One UTF-8 character of a string's text (control characters other than tab, and in
    /// multi-line strings newlines, are not allowed).
    private mutating func appendCharacter(to scalars: inout String.UnicodeScalarView, multiline: Bool) throws(TOMLError) {
        let byte = bytes[offset]
        if byte < 0x80 {
            if byte == UInt8(ascii: "\n") && multiline {
                line += 1
            } else if starts(with: "\r\n") && multiline {
                offset += 1
                line += 1
            } else if byte < 0x20 && byte != UInt8(ascii: "\t") || byte == 0x7F {
                throw error("control character \(describe()) in a string")
            }
            scalars.append(Unicode.Scalar(byte))
            offset += 1
            return
        }
        let length = byte >= 0xF0 ? 4 : byte >= 0xE0 ? 3 : 2
        guard offset + length <= bytes.count, let text = String(validating: bytes[offset..<(offset + length)], as: UTF8.self) else {
            throw error("invalid UTF-8 in a string")
        }
        scalars.append(contentsOf: text.unicodeScalars)
        offset += length
    }

    private mutating func escape() throws(TOMLError) -> Unicode.Scalar {
        offset += 1
        guard let letter = peek() else { throw error("unterminated string") }
        offset += 1
        switch letter {
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "\""): return "\""
        case UInt8(ascii: "\\"): return "\\"
        case UInt8(ascii: "u"), UInt8(ascii: "U"):
            let count = letter == UInt8(ascii: "u") ? 4 : 8
            guard offset + count <= bytes.count,
                bytes[offset..<(offset + count)].allSatisfy({ Self.isDigit($0) || Array("abcdefABCDEF".utf8).contains($0) }),
                let value = UInt32(String(decoding: bytes[offset..<(offset + count)], as: UTF8.self), radix: 16),
                let scalar = Unicode.Scalar(value)
            else { throw error("invalid \\\(Character(Unicode.Scalar(letter))) escape in a string") }
            offset += count
            return scalar
        default:
            throw error("invalid escape '\\\(Character(Unicode.Scalar(letter)))' in a string")
        }
    }

    // MARK: Layout

    private func peek() -> UInt8? { offset < bytes.count ? bytes[offset] : nil }

    private func starts(with text: String) -> Bool {
        let expected = Array(text.utf8)
        return offset + expected.count <= bytes.count && Array(bytes[offset..<(offset + expected.count)]) == expected
    }

    private mutating func skipSpaces() {
        while let byte = peek(), byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") { offset += 1 }
    }

    private mutating func skipComment() {
        guard peek() == UInt8(ascii: "#") else { return }
        while let byte = peek(), byte != UInt8(ascii: "\n") { offset += 1 }
    }

    /// Spaces, comments and line breaks (inside arrays).
    private mutating func skipBlankLines() throws(TOMLError) {
        while true {
            skipSpaces()
            skipComment()
            guard try newline() else { return }
        }
    }

    private mutating func skipBlankSpaceAndNewlines() throws(TOMLError) {
        while true {
            skipSpaces()
            guard try newline() else { return }
        }
    }

    /// Consumes one line break, if there is one.
    private mutating func newline() throws(TOMLError) -> Bool {
        if peek() == UInt8(ascii: "\n") {
            offset += 1
        } else if peek() == UInt8(ascii: "\r") {
            guard starts(with: "\r\n") else { throw error("carriage return without a line feed") }
            offset += 2
        } else {
            return false
        }
        line += 1
        return true
    }

    /// After a header or key/value: only a comment may follow on the line.
    private mutating func endOfLine() throws(TOMLError) {
        skipSpaces()
        skipComment()
        if peek() == nil { return }
        guard try newline() else { throw error("expected the end of the line, found \(describe())") }
    }

    private mutating func expect(_ character: Unicode.Scalar) throws(TOMLError) {
        skipSpaces()
        guard peek() == UInt8(character.value) else { throw error("expected '\(character)', found \(describe())") }
        offset += 1
    }

    private func describe() -> String {
        guard let byte = peek() else { return "the end of the file" }
        if byte == UInt8(ascii: "\n") { return "the end of the line" }
        return (0x21..<0x7F).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "byte 0x\(String(byte, radix: 16))"
    }

    private func error(_ reason: String) -> TOMLError { TOMLError(line: line, reason: reason) }
}
