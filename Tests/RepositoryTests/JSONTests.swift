// The Foundation-free JSON reader and printer in ComposeFSBase: RFC 8259, strictly; printing
// as serde_json's pretty printer.

import ComposeFSBase
import Testing

@Suite struct JSONTests {
    func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

    @Test func values() throws {
        #expect(try parse("null") == .null)
        #expect(try parse(" true ") == .bool(true))
        #expect(try parse("-12") == .integer(-12))
        #expect(try parse("9223372036854775807") == .integer(Int64.max))
        #expect(try parse("9223372036854775808") == .number(9223372036854775808))
        #expect(try parse("1.5e3") == .number(1500))
        #expect(try parse("1.0") == .number(1))
        #expect(try parse("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"") == .string("a\"b\\c/d\u{08}\u{0C}\n\r\té\u{1F600}"))
        #expect(try parse("[1, [], {}]") == .array([.integer(1), .array([]), .object([])]))
    }

    @Test func objectsSortedLastDuplicateWins() throws {
        let value = try parse("{\"b\": 1, \"a\": {\"z\": null}, \"b\": 2}")
        #expect(value.pretty() == "{\n  \"a\": {\n    \"z\": null\n  },\n  \"b\": 2\n}")
        #expect(value["b"] == .integer(2))
    }

    @Test func printing() {
        #expect(JSONValue.number(3).pretty() == "3.0")
        #expect(JSONValue.number(-0.0).pretty() == "-0.0")
        #expect(JSONValue.number(123456789012345).pretty() == "123456789012345.0")
        #expect(JSONValue.number(1e16).pretty() == "1e+16")
        #expect(JSONValue.number(0.25).pretty() == "0.25")
        #expect(jsonString("a\u{01}\u{1f}\"\n") == "\"a\\u0001\\u001f\\\"\\n\"")
        #expect(JSONValue.array([.string("x"), .bool(false)]).pretty() == "[\n  \"x\",\n  false\n]")
    }

    @Test(arguments: [
        "", "nul", "[1,]", "{\"a\":1,}", "{a:1}", "01", "1.", ".5", "-", "1e", "\"\\x\"", "\"\u{01}\"", "\"\\ud800\"",
        "[1] 2", "{\"a\" 1}", "\"unterminated", "1e999",
    ])
    func refused(text: String) {
        #expect(throws: JSONError.self) { try parse(text) }
    }

    @Test func invalidUTF8AndDepth() {
        #expect(throws: JSONError.self) { try JSONValue.parse([0x22, 0xff, 0x22]) }
        #expect(throws: JSONError.self) { try parse(String(repeating: "[", count: 600) + String(repeating: "]", count: 600)) }
        #expect((try? parse(String(repeating: "[", count: 100) + String(repeating: "]", count: 100))) != nil)
    }
}
