// The setup-root configuration file: composefs-rs's keys and defaults, bootc's aliases, and
// the TOML reader under it (any valid file reads; errors name the line).

import Testing

@testable import SetupRoot

@Suite struct ConfigTests {
    func config(_ text: String) throws -> SetupRootConfig { try SetupRootConfig(parsing: text, path: "test.toml") }

    @Test func defaultsAsComposefsRS() throws {
        for text in ["", "# nothing\n", "[etc]\n[var]\n[root]\n"] {
            let parsed = try config(text)
            #expect(parsed == SetupRootConfig())
            #expect(parsed.etc == .overlay && parsed.var == .bind && !parsed.transientRoot)
        }
    }

    @Test func mountModesAndAliases() throws {
        for mode in StateMount.allCases {
            #expect(try config("[etc]\nmount = \"\(mode.rawValue)\"").etc == mode)
            #expect(try config("[var]\nmount = '\(mode.rawValue)'").var == mode)
        }
        #expect(try config("[etc]\nmount = \"root\"").etc == StateMount.none)
        #expect(try config("[var]\nmount = \"volatile\"").var == .transient)
    }

    @Test func transientShorthandYieldsToMount() throws {
        #expect(try config("[etc]\ntransient = true").etc == .transient)
        #expect(try config("[var]\ntransient = true").var == .transient)
        #expect(try config("[etc]\ntransient = true\nmount = \"bind\"").etc == .bind)
        #expect(try config("[etc]\ntransient = false").etc == .overlay)
        #expect(try config("[root]\ntransient = true").transientRoot)
    }

    @Test func tomlForms() throws {
        // Dotted keys, inline tables, quoted keys, comments, and unknown keys and tables.
        let text = """
            # setup-root
            root.transient = true   # a comment
            etc = { mount = "bind", extra = [1, 2.5, "x", { a = 1 }] }
            "var".'mount' = \"\"\"
            none\"\"\"
            [other]
            when = 1979-05-27T07:32:00Z
            day = 1979-05-27
            spaced = 1979-05-27 07:32:00
            numbers = [0x1f, 0o17, 0b101, 1_000, -3, +4, 6.02e23, inf, -nan]
            text = 'C:\\path'
            multi = '''
            raw \\n'''
            escaped = "tab\\t\\u00e9\\U0001F600"
            [[servers]]
            name = "a"
            [[servers]]
            name = "b"
            [servers.sub]
            x = 1
            """
        let parsed = try config(text)
        #expect(parsed == SetupRootConfig(transientRoot: true, etc: .bind, var: .none))
        let document = try TOMLParser.parse(text)
        guard case let .table(other)? = document["other"] else { Issue.record("no [other]"); return }
        #expect(other["escaped"] == .string("tab\t\u{e9}\u{1F600}"))
        #expect(other["multi"] == .string("raw \\n"))
        #expect(other["text"] == .string("C:\\path"))
        #expect(other["spaced"] == .dateTime("1979-05-27 07:32:00"))
        guard case let .array(numbers)? = other["numbers"] else { Issue.record("no numbers"); return }
        #expect(Array(numbers.prefix(6)) == [.integer(31), .integer(15), .integer(5), .integer(1000), .integer(-3), .integer(4)])
        #expect(numbers[6] == .float(6.02e23))
        guard case let .array(servers)? = document["servers"], servers.count == 2, case let .table(second) = servers[1] else {
            Issue.record("array of tables")
            return
        }
        #expect(second["name"] == .string("b") && second["sub"] == .table(["x": .integer(1)]))
    }

    @Test func multilineBasicStringLineEndingBackslash() throws {
        let document = try TOMLParser.parse("s = \"\"\"\none \\\n   two\"\"\"\n")
        #expect(document["s"] == .string("one two"))
    }

    /// Up to two quotes right before the closing three belong to a multi-line string.
    @Test func multilineStringsEndingInQuotes() throws {
        let document = try TOMLParser.parse("b = \"\"\"x\"\"\"\"\"\nl = \'\'\'y\'\'\'\'\nn = \"\"\"z\"\"\"\n")
        #expect(document["b"] == .string("x\"\""))
        #expect(document["l"] == .string("y\'"))
        #expect(document["n"] == .string("z"))
    }

    /// Each is refused with the line where reading stopped.
    @Test(arguments: [
        ("[etc\nmount = \"bind\"", 1),
        ("[etc]\nmount = bind", 2),
        ("[etc]\nmount = \"bind\"\nmount = \"none\"", 3),
        ("[etc]\n[etc]", 2),
        ("x = \"unterminated\ny = 1", 1),
        ("x = 1 2", 1),
        ("x = 01", 1),
        ("x = 1__0", 1),
        ("x = [1, 2", 1),
        ("x = \"bad \\q escape\"", 1),
        ("a = 1\n[a]", 2),
        ("= 1", 1),
        ("x = 1.", 1),
    ])
    func invalidTOML(text: String, line: Int) throws {
        #expect(throws: TOMLError.self) { try TOMLParser.parse(text) }
        do throws(TOMLError) { _ = try TOMLParser.parse(text) } catch { #expect(error.line == line, "\(text): \(error.reason)") }
        #expect(throws: SetupRootError.self) { try config(text) }
    }

    @Test func wrongTypesAndModes() throws {
        for text in [
            "[etc]\nmount = \"bogus\"", "[etc]\nmount = 1", "[var]\ntransient = \"yes\"", "etc = 1", "[root]\ntransient = 1",
        ] {
            do throws(SetupRootError) {
                _ = try SetupRootConfig(parsing: text, path: "test.toml")
                Issue.record("accepted: \(text)")
            } catch {
                let message = error.description
                #expect(message.hasPrefix("invalid configuration test.toml") && !message.contains("\n"), "\(message)")
            }
        }
    }

    @Test func missingFileIsTheDefaults() throws {
        #expect(try SetupRootConfig.load(path: "/nonexistent/setup-root-conf.toml") == SetupRootConfig())
    }
}
