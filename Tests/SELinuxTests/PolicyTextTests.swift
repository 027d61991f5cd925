// The policy's text files read as composefs-rs 0.9 reads them (Rust's `lines` and
// `split_whitespace`, lines numbered from 0).

import Testing

@testable import SELinux

private func lines(_ text: [UInt8]) throws -> [String] {
    var result: [String] = []
    try PolicyText.forEachLine(text) { (_, line) throws(LineError) in
        result.append(line)
        return true
    }
    return result
}

private func specifications(_ text: String) throws(LineError) -> [(pattern: String, context: String)] {
    var specs: [(pattern: String, context: String)] = []
    try PolicyText.specifications(Array(text.utf8), into: &specs)
    return specs
}

private func lineError(_ text: String) -> String? {
    do {
        _ = try specifications(text)
        return nil
    } catch {
        return error.line.map { "\($0): \(error.reason)" } ?? "not UTF-8"
    }
}

@Suite struct PolicyTextTests {
    @Test func linesAsRustSplitsThem() throws {
        #expect(try lines(Array("a\r\nb\rc\n\r\n".utf8)) == ["a", "b\rc", ""])
        // A "\r" goes only with a "\n" after it; a last line needs no "\n".
        #expect(try lines(Array("a\nb\r".utf8)) == ["a", "b\r"])
        #expect(try lines([]) == [])
        #expect(throws: LineError.self) { try lines([0x61, 0x0A, 0xFF]) }
    }

    @Test func fieldsSplitAtUnicodeWhiteSpace() {
        let fields = PolicyText.fields("a\u{A0}b\u{3000}c\u{0B}d \u{2028} e").map { String($0) }
        #expect(fields == ["a", "b", "c", "d", "e"])
    }

    @Test func configNamesTheFirstPolicyType() throws {
        func type(_ text: String) throws -> String? { try PolicyText.policyType(config: Array(text.utf8)) }
        #expect(try type("SELINUX=enforcing\nSELINUXTYPE=targeted\n") == "targeted")
        #expect(try type("#SELINUXTYPE=no\n selinuxType = a b \nSELINUXTYPE=later\n") == "a b")
        #expect(try type("SELINUXTYPE==x=\n") == "=x=")
        #expect(try type("SELINUX=enforcing\n") == nil)
        // Reading stops at the answer: what follows need not be UTF-8.
        #expect(try PolicyText.policyType(config: Array("SELINUXTYPE=t\n".utf8) + [0xFF]) == "t")
        #expect(throws: LineError.self) { try PolicyText.policyType(config: [0xFF, 0x0A] + Array("SELINUXTYPE=t\n".utf8)) }
    }

    @Test func specificationsBecomeAnchoredPatterns() throws {
        let specs = try specifications("# comment\n\n  /usr(/.*)?\tu:r:usr:s0\n/dev/null -c u:r:null:s0  \n/x\t--\t<<none>>\n")
        #expect(specs.map(\.pattern) == ["^(/usr(/.*)?).$", "^(/dev/null)c$", "^(/x)-$"])
        #expect(specs.map(\.context) == ["u:r:usr:s0", "u:r:null:s0", "<<none>>"])
    }

    @Test func badSpecificationLines() {
        #expect(lineError("/a\tctx\n/b\n") == "1: missing separator after regex")
        #expect(lineError("/a -x ctx\n") == "0: invalid type code -x")
        #expect(lineError("/a - ctx\n") == "0: invalid type code -")
        #expect(lineError("/a --- ctx\n") == "0: invalid type code ---")
        #expect(lineError("\n# c\n/a -d\n") == "2: missing context field")
        #expect(lineError("/a b c\n") == "0: trailing data")
        #expect(lineError("/a -d b c\n") == "0: trailing data")
        #expect(lineError("/a ctx\n/b\u{FFFD}") == "1: missing separator after regex")
    }

    @Test func substitutions() throws {
        var aliases: [[UInt8]: [UInt8]] = [:]
        try PolicyText.substitutions(Array("# c\n/lib /usr/lib\n\n/lib  /usr/lib64 \n/a /b\n".utf8), into: &aliases)
        #expect(aliases == [Array("/lib".utf8): Array("/usr/lib64".utf8), Array("/a".utf8): Array("/b".utf8)])
        #expect(throws: LineError.self) { try PolicyText.substitutions(Array("/a\n".utf8), into: &aliases) }
        #expect(throws: LineError.self) { try PolicyText.substitutions(Array("/a /b /c\n".utf8), into: &aliases) }
    }
}
