// The pattern syntax the lazy DFA takes (regex-syntax 0.8's, as composefs-rs configures it),
// what the patterns match, and the UTF-8 encoding of Unicode classes.

import TestSupport
import Testing

@testable import SELinux

private func accepted(_ pattern: String) -> Bool {
    (try? RegexTranslator.translate(RegexParser.parse(pattern))) != nil
}

/// A policy of these (pattern, context) lines, in file order.
private func policy(_ lines: [(String, String)]) throws -> Policy {
    do { return try Policy.compile(specifications: lines, aliases: [:]) } catch { throw error }
}

private func label(_ policy: Policy, _ path: String, _ type: Character = "-") -> String? {
    let index = policy.label(path: Array(path.utf8), type: UInt8(ascii: type.unicodeScalars.first!))
    return index < 0 ? nil : String(decoding: policy.labels[Int(index)], as: UTF8.self)
}

@Suite struct RegexSyntaxTests {
    @Test(arguments: [
        "a", "/usr(/.*)?", "a**", "^*", "a+?", "a{2}", "a{ 2 , 3 }?", "a{2,}", "a{0}", "(?i)a", "(?i:a)b", "(?x) a # note\n b",
        "(?-i)a", "(?sm)^.$", "(?R)", "(?U)a*", "[[:alpha:]]", "[[:^digit:]x]", "[a-z&&[^b]]", "[a-z--b]", "[a~~b]", "[]a]",
        "[^]a]", "[-a-]", "[a-]", "[[:foo:]]", "[[a]]", "[\\d-]", "[.]", "\\b{start}", "\\b{end-half}", "\\b{2}", "\\<a\\>",
        "\\Aa\\z", "\\xe9", "\\x{e9}", "\\u00e9", "\\U000000e9", "\\/", "\\ ", "\\#", "\\%", "\\t\\n\\r\\f\\v\\a", "(?P<n>a)(?<m>b)",
        "(?u).", "(?u)[é]", "(?u)[^a]", "(?u)\\xff", "(?iu).", "é", "(?i)é", "a|", "|a", "()", "(|)", "(?:)", "a(?i)b|c",
        "\\b", "\\B", "(?m)$", "(?mR)^",
    ])
    func accepts(_ pattern: String) {
        #expect(accepted(pattern), "\(pattern)")
    }

    @Test(arguments: [
        "\\1", "\\0", "\\8", "\\pL", "\\p{Greek}", "\\PL", "(?=a)", "(?!a)", "(?<=a)", "(?<!a)", "a{", "a{2", "{2}", "a{,2}",
        "a{2,1}", "a{x}", "a{4294967296}", "(?)", "(?-)", "(?i-)", "(?ii)", "(?--i)", "(?q)", "(?", "(?i", "[é]", "[\\x{e9}]",
        "[a-\\d]", "[\\b]", "[z-a]", "[a", "[]", "[^]", "(", ")", "a)", "(a", "(?P<n>a)(?P<n>b)", "(?P<>a)", "(?P<1>a)", "*", "+a",
        "(*)", "(?i)*", "a|*", "\\Z", "\\G", "\\Q", "\\e", "\\K", "\\c", "\\b{x}", "\\b{start", "\\x", "\\xg", "\\u{d800}", "\\",
        "(?u)\\d", "(?u)\\w", "(?iu)a", "(?iu)[a]", "(?iu)[[:alpha:]]", "(?u)[[:alpha:]&&a]\\pL",
        String(repeating: "(", count: 251) + String(repeating: ")", count: 251),
        String(repeating: "a*", count: 1) + String(repeating: "*", count: 251),
    ])
    func refuses(_ pattern: String) {
        #expect(!accepted(pattern), "\(pattern)")
    }

    @Test func nestingUpToTheLimit() {
        // The wrapping group and concatenation of `^(...).$` count too.
        #expect(accepted(String(repeating: "(", count: 249) + "a" + String(repeating: ")", count: 249)))
        #expect(accepted("^(" + String(repeating: "(", count: 248) + "a" + String(repeating: ")", count: 248) + ").$"))
        #expect(!accepted("^(" + String(repeating: "(", count: 249) + "a" + String(repeating: ")", count: 249) + ").$"))
    }
}

@Suite struct PolicyMatchingTests {
    @Test func theLastMatchingLineWins() throws {
        let policy = try policy([
            ("^(/.*).$", "default"), ("^(/usr(/.*)?).$", "usr"), ("^(/usr/bin/.*)-$", "bin"), ("^(/usr/bin/none).$", "<<none>>"),
        ])
        #expect(label(policy, "/", "d") == "default")
        #expect(label(policy, "/usr", "d") == "usr")
        #expect(label(policy, "/usr/bin", "d") == "usr")
        #expect(label(policy, "/usr/bin/ls") == "bin")
        #expect(label(policy, "/usr/bin/ls", "l") == "usr")
        #expect(label(policy, "/usr/bin/none") == nil)
        #expect(label(policy, "relative") == nil)
    }

    @Test func anchoringAsComposefsRSWrapsThePattern() throws {
        // A pattern may close the wrapping group: `^(/a)|(/b).$` matches any key starting with /a.
        let policy = try policy([("^(/.*).$", "default"), ("^(/a)|(/b).$", "injected")])
        #expect(label(policy, "/abc/def") == "injected")
        #expect(label(policy, "/xb-") == "default")
        #expect(label(policy, "/b") == "injected")
    }

    @Test func dotAndLineAnchors() throws {
        let policy = try policy([
            ("^(/.*).$", "default"), ("^(/n.m).$", "dot"), ("^(/l(?m:$)\\n.).$", "endLF"), ("^(/c\\r(?mR:^)x).$", "crlf"),
            ("^(/w\\b).$", "word"), ("^(/s(?s:.)).$", "any"),
        ])
        #expect(label(policy, "/n\nm") == "dot")
        #expect(label(policy, "/l\nx") == "endLF")
        #expect(label(policy, "/c\rx") == "crlf")
        #expect(label(policy, "/w") == "word")
        #expect(label(policy, "/wx") == "default")
        #expect(label(policy, "/s\n") == "any")
    }

    @Test func bytesAndUnicodeMode() throws {
        let policy = try policy([
            ("^(/.*).$", "default"), ("^(/b\\xe9).$", "byte"), ("^(/c\\x{e9}).$", "char"), ("^(/u(?u:.)).$", "scalar"),
            ("^(/i(?i)ab).$", "folded"),
        ])
        #expect(policy.label(path: [0x2F, 0x62, 0xE9], type: 0x2D) >= 0)
        #expect(label(policy, "/b\u{E9}") == "default")
        #expect(label(policy, "/c\u{E9}") == "char")
        #expect(label(policy, "/u\u{E9}") == "scalar")
        #expect(label(policy, "/u\u{10FFFF}") == "scalar")
        let invalid = policy.label(path: [0x2F, 0x75, 0xE9], type: 0x2D)
        #expect(policy.labels[Int(invalid)] == Array("default".utf8))
        #expect(label(policy, "/iAb") == "folded")
    }

    @Test func pcre2PatternsKeepTheirPriority() throws {
        // Lookarounds are PCRE2's; the highest-priority match wins whichever engine finds it.
        let policy = try policy([
            ("^(/(.*)?).$", "default"), ("^(/usr(.*)?).$", "usr"), ("^(/usr/bin/(?!bad).*).$", "binOK"),
            ("^(/usr/bin/good).$", "good"), ("^(/etc/(?!shadow).*).$", "public"), ("^(/etc/hostname).$", "hostname"),
        ])
        #expect(label(policy, "/etc/hostname") == "hostname")
        #expect(label(policy, "/etc/passwd") == "public")
        #expect(label(policy, "/etc/shadow") == "default")
        #expect(label(policy, "/usr/bin/good") == "good")
        #expect(label(policy, "/usr/bin/hello") == "binOK")
        #expect(label(policy, "/usr/bin/bad") == "usr")
    }

    @Test func patternsNeitherEngineTakes() {
        #expect(throws: SELinuxProblem.patternRejected(pattern: "^(/[).$", offset: 7, message: "missing terminating ] for character class")) {
            try Policy.compile(specifications: [("^(/.*).$", "a"), ("^(/[).$", "b")], aliases: [:])
        }
        // The last line is compiled first.
        #expect(throws: SELinuxProblem.patternRejected(pattern: "^(/b(?).$", offset: 9, message: "missing closing parenthesis")) {
            try Policy.compile(specifications: [("^(/a(?).$", "a"), ("^(/b(?).$", "b")], aliases: [:])
        }
        #expect(throws: SELinuxProblem.unicodeWordBoundary) {
            try Policy.compile(specifications: [("^(/a(?u:\\b)).$", "a")], aliases: [:])
        }
        // Unless it can never be reached by the automaton.
        #expect(throws: Never.self) { try Policy.compile(specifications: [("^(/a(?u:\\b){0}).$", "a")], aliases: [:]) }
    }

    @Test func arbitraryPatternsNeverCrash() {
        var generator = SplitMix64(seed: 7)
        let alphabet = Array("ab/.-()[]{}|?*+^$\\:&~#<>,0123456789pPxuUdswbBAzimsxRU ".unicodeScalars) + ["é", "\u{0}", "\n"]
        for _ in 0..<3000 {
            var pattern = ""
            for _ in 0..<Int(generator.next() % 24) { pattern.unicodeScalars.append(alphabet[Int(generator.next() % UInt64(alphabet.count))]) }
            _ = try? Policy.compile(specifications: [("^(\(pattern)).$", "x")], aliases: [:]).label(path: Array("/ab".utf8), type: 0x2D)
        }
    }
}

@Suite struct UTF8SequenceTests {
    @Test func sequencesMatchExactlyTheEncodingsOfTheSet() {
        let set = ScalarSet([0x41...0x5A, 0x7F...0x800, 0xD000...0xE100, 0xFFFF...0x10000, 0x10FFF0...0x10FFFF])
        let sequences = UTF8Sequences.of(set)
        func matches(_ bytes: [UInt8]) -> Int {
            sequences.filter { $0.count == bytes.count && zip($0, bytes).allSatisfy { $0.contains($1) } }.count
        }
        for value in stride(from: UInt32(0), through: 0x10FFFF, by: 7) + [0x41, 0x5A, 0x7F, 0x800, 0xD7FF, 0xE000, 0xE100, 0xFFFF, 0x10000] {
            guard let scalar = Unicode.Scalar(value) else { continue }
            let inside = set.ranges.contains { $0.contains(value) }
            #expect(matches(Array(String(scalar).utf8)) == (inside ? 1 : 0), "U+\(String(value, radix: 16))")
        }
        // Surrogates and overlong forms are never matched.
        #expect(matches([0xED, 0xA0, 0x80]) == 0)
        #expect(matches([0xC1, 0x81]) == 0)
    }
}
