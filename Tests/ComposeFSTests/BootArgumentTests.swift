import ComposeFS
import FsVerity
import Testing

struct BootArgumentTests {
    static let sha256 = "8b7df143d91c716ecfa5fc1730022f6b421b05cedee8fd52b1fc65a96030ad52"
    static let sha512 = "6f06b5e82420abec546d6e6d3ddd612c50cfa9b707c129345b7ec16f456b92fe"
        + "35df68999b042e1a6a70dfe75f2fed8cf9f67afd0bf08d2374678d75e2f65a02"

    @Test func everyFormRoundTrips() throws {
        for (hex, algorithm) in [(Self.sha256, FsVerityAlgorithm.sha256), (Self.sha512, .sha512)] {
            let id = try #require(ObjectID(hex: hex, algorithm: algorithm))
            for format in [FormatVersion.v1, .v2] {
                for insecure in [false, true] {
                    let argument = BootArgument(id: id, format: format, insecure: insecure)
                    #expect(try BootArgument.all(in: "quiet " + argument.text + " rw") == [argument])
                }
            }
        }
        #expect(BootArgument(id: ObjectID(hex: Self.sha256, algorithm: .sha256)!, format: .v0, insecure: true).text
            == "composefs.digest=?v1-sha256-12:" + Self.sha256)
        #expect(BootArgument(id: ObjectID(hex: Self.sha512, algorithm: .sha512)!, format: .v2, insecure: false).text
            == "composefs=" + Self.sha512)
        // `v2-` in composefs.digest= names a V2 image too.
        #expect(try BootArgument.all(in: "composefs.digest=v2-sha256-12:" + Self.sha256).map(\.format) == [.v2])
    }

    @Test func severalAreKeptInOrder() throws {
        let other = String(repeating: "a", count: 64)
        let line = "composefs=\(other) composefs.digest=v1-sha512-12:\(Self.sha512) composefs.digest=?v1-sha256-12:\(Self.sha256)"
        let found = try BootArgument.all(in: line)
        #expect(found.map(\.id.hex) == [other, Self.sha512, Self.sha256])
        #expect(found.map(\.insecure) == [false, false, true])
        #expect(try BootArgument.all(in: "").isEmpty)
        #expect(try BootArgument.all(in: "root=UUID=abc quiet composefs.digestx=1 xcomposefs=2").isEmpty)
    }

    @Test func badValuesAreErrors() {
        for line in [
            "composefs=foo", "composefs", "composefs=" + String(repeating: "g", count: 64),
            "composefs.digest=v1-sha256-12:nothex", "composefs.digest=v3-sha256-12:" + Self.sha256,
            "composefs.digest=v1-sha384-12:" + Self.sha256, "composefs.digest=v1-sha512-12:" + Self.sha256,
            "composefs.digest=" + Self.sha256,
        ] {
            #expect(throws: BootArgumentError.self, "\(line)") { try BootArgument.all(in: line) }
        }
    }

    @Test func kernelQuoting() {
        func split(_ line: String) -> [String] {
            KernelCommandLine.parameters(line).map { parameter in parameter.value.map { "\(parameter.key)=\($0)" } ?? parameter.key }
        }
        #expect(split("  a=1\tb  \"c=x y\" d=\"p q\" \"e f\" g=\"h") == ["a=1", "b", "c=x y", "d=p q", "e f", "g=h"])
        #expect(split("a=b=c =x") == ["a=b=c", "=x"])
        #expect(KernelCommandLine.parameters("=x").first?.value == nil)
        // After `--` the arguments are init's.
        #expect(split("a -- composefs=x") == ["a"])
        #expect(KernelCommandLine.parameters("x=\"1 2\"").first?.raw == "x=\"1 2\"")
    }
}
