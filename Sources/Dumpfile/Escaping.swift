// The escaping rules of composefs-dump(5): fields are space separated, so
// spaces, backslashes and non-printable bytes are written as \xNN (or \\, \n,
// \r, \t); xattr fields also escape '='.

public struct EscapeStyle: OptionSet, Sendable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Leave spaces as they are (for human-readable listings).
    public static let keepSpace = EscapeStyle(rawValue: 1 << 0)
    /// Escape '=' (xattr names and values).
    public static let equals = EscapeStyle(rawValue: 1 << 1)
    /// Escape a field that is exactly "-", which would read back as "absent".
    public static let loneDash = EscapeStyle(rawValue: 1 << 2)
}

public enum Escaping {
    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// Appends the escaped form of `bytes` to `out`.
    public static func escape(_ bytes: some Collection<UInt8>, style: EscapeStyle = [], into out: inout [UInt8]) {
        if style.contains(.loneDash) && bytes.count == 1 && bytes.first == UInt8(ascii: "-") {
            out.append(contentsOf: Array("\\x2d".utf8))
            return
        }
        let keepSpace = style.contains(.keepSpace)
        let escapeEquals = style.contains(.equals)
        for c in bytes {
            switch c {
            case UInt8(ascii: "\\"): out.append(c); out.append(c)
            case UInt8(ascii: "\n"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"): out.append(UInt8(ascii: "\\")); out.append(UInt8(ascii: "t"))
            case UInt8(ascii: "="):
                if escapeEquals { appendHex(c, &out) } else { out.append(c) }
            default:
                // C-locale isgraph / isprint.
                let printable = keepSpace ? (c >= 0x20 && c <= 0x7E) : (c >= 0x21 && c <= 0x7E)
                if printable { out.append(c) } else { appendHex(c, &out) }
            }
        }
    }

    @inline(__always) private static func appendHex(_ c: UInt8, _ out: inout [UInt8]) {
        out.append(UInt8(ascii: "\\"))
        out.append(UInt8(ascii: "x"))
        out.append(hexDigits[Int(c >> 4)])
        out.append(hexDigits[Int(c & 15)])
    }

    /// Escapes, or writes "-" for an absent value.
    public static func escapeOptional(_ bytes: [UInt8]?, style: EscapeStyle = [], into out: inout [UInt8]) {
        if let bytes { escape(bytes, style: style, into: &out) } else { out.append(UInt8(ascii: "-")) }
    }

    public static func escaped(_ bytes: some Collection<UInt8>, style: EscapeStyle = []) -> [UInt8] {
        var out: [UInt8] = []
        escape(bytes, style: style, into: &out)
        return out
    }

    /// Decodes an escaped field. Throws a message describing the bad escape.
    public static func unescape(_ field: UnsafeRawBufferPointer) throws(DumpfileError.Reason) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(field.count)
        var i = 0
        let n = field.count
        while i < n {
            let c = field[i]
            i += 1
            guard c == UInt8(ascii: "\\") else {
                out.append(c)
                continue
            }
            guard i < n else { throw .badEscape("no character after escape") }
            let e = field[i]
            i += 1
            switch e {
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "n"): out.append(UInt8(ascii: "\n"))
            case UInt8(ascii: "r"): out.append(UInt8(ascii: "\r"))
            case UInt8(ascii: "t"): out.append(UInt8(ascii: "\t"))
            case UInt8(ascii: "x"):
                guard i + 1 < n else { throw .badEscape("no hex characters after hex escape") }
                guard let hi = hexValue(field[i]), let lo = hexValue(field[i + 1]) else {
                    throw .badEscape("invalid hex characters after hex escape")
                }
                out.append(hi << 4 | lo)
                i += 2
            default:
                throw .badEscape("unsupported escape type '\\\(Character(Unicode.Scalar(e)))'")
            }
        }
        return out
    }

    @inline(__always) static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
