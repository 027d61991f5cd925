// os-release(5) as composefs-rs 0.9 reads it for boot labels: one KEY=VALUE per line (lines
// whose trimmed text starts with '#' skipped, the key taken as written, the last of a key
// winning), values dequoted the shell's way as far as os-release needs (double quotes with
// backslash escapes, single quotes, concatenation; an unclosed quote makes the value unusable,
// and the next key asked for is tried instead).

public struct OSRelease: Sendable {
    /// Raw values by key (the UTF-8 of the key, so keys compare byte for byte).
    private let values: [[UInt8]: [Unicode.Scalar]]

    public init(_ text: String) {
        var values: [[UInt8]: [Unicode.Scalar]] = [:]
        for line in Self.lines(Array(text.unicodeScalars)) where Self.trimmed(line).first != "#" {
            guard let equals = line.firstIndex(of: "=") else { continue }
            values[Self.utf8(line[..<equals])] = Array(line[(equals + 1)...])
        }
        self.values = values
    }

    /// The dequoted value of the first of `keys` present with a usable value.
    public func value(_ keys: [String]) -> String? {
        for key in keys {
            if let raw = values[Array(key.utf8)], let value = Self.dequote(raw[...]) { return value }
        }
        return nil
    }

    /// PRETTY_NAME, else NAME, else ID.
    public var prettyName: String? { value(["PRETTY_NAME", "NAME", "ID"]) }

    /// VERSION_ID, else VERSION.
    public var version: String? { value(["VERSION_ID", "VERSION"]) }

    /// The Boot Loader Specification's label: the name, then the version when there is one;
    /// nil without a name.
    public var bootLabel: String? {
        guard let name = prettyName else { return nil }
        return version.map { "\(name) \($0)" } ?? name
    }

    /// Lines split at "\n", a "\r" before it dropped, no empty last line (Rust's `str::lines`).
    static func lines(_ text: [Unicode.Scalar]) -> [ArraySlice<Unicode.Scalar>] {
        var lines: [ArraySlice<Unicode.Scalar>] = []
        var start = 0
        for index in text.indices where text[index] == "\n" {
            let end = index > start && text[index - 1] == "\r" ? index - 1 : index
            lines.append(text[start..<end])
            start = index + 1
        }
        if start < text.count { lines.append(text[start...]) }
        return lines
    }

    /// Without leading and trailing Unicode white space (Rust's `str::trim`).
    static func trimmed(_ text: ArraySlice<Unicode.Scalar>) -> ArraySlice<Unicode.Scalar> {
        guard let first = text.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = text.lastIndex(where: { !$0.properties.isWhitespace })
        else { return [] }
        return text[first...last]
    }

    static func utf8(_ scalars: some Sequence<Unicode.Scalar>) -> [UInt8] {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return Array(String(view).utf8)
    }

    /// The value without its quotes; nil when a quote is not closed.
    static func dequote(_ raw: ArraySlice<Unicode.Scalar>) -> String? {
        var result = String.UnicodeScalarView()
        var scalars = trimmed(raw).makeIterator()
        while let scalar = scalars.next() {
            switch scalar {
            case "\"":
                while true {
                    guard let next = scalars.next() else { return nil }
                    if next == "\"" { break }
                    if next == "\\" {
                        guard let escaped = scalars.next() else { return nil }
                        result.append(escaped)
                    } else {
                        result.append(next)
                    }
                }
            case "'":
                while true {
                    guard let next = scalars.next() else { return nil }
                    if next == "'" { break }
                    result.append(next)
                }
            default:
                result.append(scalar)
            }
        }
        return String(result)
    }
}
