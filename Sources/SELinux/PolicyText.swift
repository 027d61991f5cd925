// The text files of an SELinux policy as composefs-rs 0.9 reads them: lines as Rust's
// `BufRead::lines` gives them (split at "\n", one "\r" before it dropped, each line UTF-8 or
// an error), fields split at Unicode white space (`split_whitespace`), lines numbered from 0.
//
// - /etc/selinux/config: the value of the first `SELINUXTYPE=` line (key compared ignoring
//   ASCII case, both sides trimmed), reading stopping there;
// - file_contexts: `REGEX [-TYPE] CONTEXT`, the regex becoming `^(REGEX)TYPE$` (`.` for any
//   type), TYPE one of b c d p l s -;
// - file_contexts.subs: `ALIAS ORIGINAL`, later lines overriding earlier ones.
// A first field starting with "#" makes a comment.

/// A problem with one line of a policy file.
struct LineError: Error {
    /// Where the line is (from 0); nil when the file is not UTF-8 up to the line.
    var line: Int?
    var reason: String

    var problem: SELinuxProblem { line.map { .badLine($0, reason) } ?? .notUTF8 }
}

enum PolicyText {
    /// The lines of `bytes`, each decoded, until the first that is not UTF-8 (`body` stops
    /// early by returning false).
    static func forEachLine(_ bytes: [UInt8], _ body: (Int, String) throws(LineError) -> Bool) throws(LineError) {
        var start = 0
        var number = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
            let next = end + 1
            // As Rust, "\r" goes only with the "\n" after it.
            if end < bytes.count, end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            guard let line = String(validating: bytes[start..<end], as: UTF8.self) else { throw LineError(line: nil, reason: "") }
            guard try body(number, line) else { return }
            number += 1
            start = next
        }
    }

    /// Rust's `char::is_whitespace`: the Unicode White_Space property.
    static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000: true
        default: false
        }
    }

    /// `split_whitespace`.
    static func fields(_ line: String) -> [Substring.UnicodeScalarView] {
        line.unicodeScalars.split(whereSeparator: isWhitespace)
    }

    /// `trim`.
    static func trimmed(_ text: Substring.UnicodeScalarView) -> String {
        var text = text
        while let first = text.first, isWhitespace(first) { text.removeFirst() }
        while let last = text.last, isWhitespace(last) { text.removeLast() }
        return String(text)
    }

    /// The policy type /etc/selinux/config names, nil when it names none.
    static func policyType(config: [UInt8]) throws(LineError) -> String? {
        var found: String?
        try forEachLine(config) { (_, line) throws(LineError) in
            let scalars = line.unicodeScalars
            guard let equals = scalars.firstIndex(of: "=") else { return true }
            // Rust's eq_ignore_ascii_case: only ASCII letters fold.
            let key = trimmed(scalars[..<equals])
            guard key.uppercasedASCII == "SELINUXTYPE" else { return true }
            found = trimmed(scalars[scalars.index(after: equals)...])
            return false
        }
        return found
    }

    /// The codes a file type may be given with (`-d` and so on).
    static let typeCodes: Set<String> = ["b", "c", "d", "p", "l", "s", "-"]

    /// Appends the (pattern, context) of each line of a file_contexts file.
    static func specifications(_ bytes: [UInt8], into specs: inout [(pattern: String, context: String)]) throws(LineError) {
        try forEachLine(bytes) { (number, line) throws(LineError) in
            let fields = fields(line)
            guard let regex = fields.first, regex.first != "#" else { return true }
            guard fields.count > 1 else { throw LineError(line: number, reason: "missing separator after regex") }
            let second = String(fields[1])
            if second.hasPrefix("-") {
                let code = String(second.dropFirst())
                guard typeCodes.contains(code) else { throw LineError(line: number, reason: "invalid type code -\(code)") }
                guard fields.count > 2 else { throw LineError(line: number, reason: "missing context field") }
                specs.append(("^(\(String(regex)))\(code)$", String(fields[2])))
                guard fields.count == 3 else { throw LineError(line: number, reason: "trailing data") }
            } else {
                specs.append(("^(\(String(regex))).$", second))
                guard fields.count == 2 else { throw LineError(line: number, reason: "trailing data") }
            }
            return true
        }
    }

    /// Adds the aliases of a substitutions file (a later alias replacing an earlier one).
    static func substitutions(_ bytes: [UInt8], into aliases: inout [[UInt8]: [UInt8]]) throws(LineError) {
        try forEachLine(bytes) { (number, line) throws(LineError) in
            let fields = fields(line)
            guard let alias = fields.first, alias.first != "#" else { return true }
            guard fields.count > 1 else { throw LineError(line: number, reason: "missing original path") }
            guard fields.count == 2 else { throw LineError(line: number, reason: "trailing data") }
            aliases[Array(String(alias).utf8)] = Array(String(fields[1]).utf8)
            return true
        }
    }
}

extension String {
    /// ASCII letters upper-cased, everything else kept.
    var uppercasedASCII: String {
        String(decoding: utf8.map { (0x61...0x7A).contains($0) ? $0 - 0x20 : $0 }, as: UTF8.self)
    }
}
