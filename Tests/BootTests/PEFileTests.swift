// PE section reading as composefs-rs 0.9 does it: hand-made files for every way one can be
// broken, and real UKIs (systemd's stub with objcopy's sections) read section by section.

import Boot
import Foundation
import Testing
import TestSupport

/// A PE file as composefs-rs's tests make them: the DOS stub pointing right after itself, the
/// PE header, an optional header, the section headers, then `data`.
func makePE(optionalHeader: [UInt8] = [], sections: [(name: String, size: UInt32, offset: UInt32, rawSize: UInt32)], data: [UInt8]) -> [UInt8] {
    func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF)] }
    func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(v >> (8 * $0) & 0xFF) } }
    var bytes = [UInt8](repeating: 0, count: 0x3C) + le32(0x40)
    bytes += Array("PE\0\0".utf8) + le16(0x8664) + le16(sections.count) + [UInt8](repeating: 0, count: 12)
    bytes += le16(optionalHeader.count) + le16(0) + optionalHeader
    for section in sections {
        let name = Array(section.name.utf8)
        bytes += name + [UInt8](repeating: 0, count: 8 - name.count)
        bytes += le32(section.size) + le32(0x1000) + le32(section.rawSize) + le32(section.offset) + [UInt8](repeating: 0, count: 16)
    }
    return bytes + data
}

/// Where `makePE`'s data starts.
func peDataOffset(sections: Int, optionalHeader: Int = 0) -> UInt32 { UInt32(0x40 + 24 + optionalHeader + 40 * sections) }

struct PEFileTests {
    @Test func sectionsAreVirtualSizeBytesAtTheirOffset() throws {
        let start = peDataOffset(sections: 3, optionalHeader: 16)
        let data = Array("root=/dev/sda1 quietPRETTY_NAME=x\n".utf8) + [UInt8](repeating: 0, count: 12)
        let pe = try PEFile(
            makePE(
                optionalHeader: [UInt8](repeating: 7, count: 16),
                sections: [
                    // SizeOfRawData (the padded size) is not the data's size.
                    (".cmdline", 20, start, 32), (".osrel", 14, start + 20, 26),
                    // The first of two sections of one name is the one read.
                    (".cmdline", 3, start, 3),
                ], data: data))
        #expect(pe.sections.map(\.name) == [".cmdline", ".osrel", ".cmdline"])
        #expect(Array(try pe.section(".cmdline")) == Array("root=/dev/sda1 quiet".utf8))
        #expect(try UKI(pe.bytes).commandLine() == "root=/dev/sda1 quiet")
        #expect(try UKI(pe.bytes).text(".osrel") == "PRETTY_NAME=x\n")
        #expect(throws: PEError.missingSection(".linux")) { try pe.section(".linux") }
    }

    @Test func brokenFilesAreRefusedWithTheReason() throws {
        #expect(throws: PEError.truncatedDOSHeader(size: 0)) { try PEFile([]) }
        #expect(throws: PEError.truncatedDOSHeader(size: 63)) { try PEFile([UInt8](repeating: 0, count: 63)) }
        // e_lfanew 0: the DOS header is no PE signature.
        #expect(throws: PEError.badSignature(offset: 0)) { try PEFile([UInt8](repeating: 0, count: 0x80)) }
        var pe = makePE(sections: [], data: [])
        pe[0x3C] = 0x30
        #expect(throws: PEError.badSignature(offset: 0x30)) { try PEFile(pe) }
        pe[0x3C] = 0x41
        #expect(throws: PEError.peHeaderOutOfBounds(offset: 0x41, size: pe.count)) { try PEFile(pe) }
        pe[0x3C] = 0xFF
        pe[0x3F] = 0xFF
        #expect(throws: PEError.peHeaderOutOfBounds(offset: 0xFF00_00FF, size: pe.count)) { try PEFile(pe) }
        // More section headers than the file holds.
        let truncated = Array(makePE(sections: [(".cmdline", 1, 0, 1), (".osrel", 1, 0, 1)], data: []).dropLast(1))
        #expect(throws: PEError.sectionTableOutOfBounds(offset: 0x58, sections: 2, size: truncated.count)) { try PEFile(truncated) }
        // An optional header larger than the file.
        var optional = makePE(sections: [], data: [])
        optional[0x40 + 20] = 0xFF
        #expect(throws: PEError.sectionTableOutOfBounds(offset: 0x58 + 0xFF, sections: 0, size: optional.count)) { try PEFile(optional) }
        // A section whose data runs past the end; another one is still readable.
        let start = peDataOffset(sections: 2)
        let file = try PEFile(makePE(sections: [(".cmdline", 100, start, 100), (".osrel", 4, start, 4)], data: Array("abcdef".utf8)))
        #expect(throws: PEError.sectionOutOfBounds(name: ".cmdline", offset: start, length: 100, size: file.bytes.count)) {
            try file.section(".cmdline")
        }
        #expect(Array(try file.section(".osrel")) == Array("abcd".utf8))
        let huge = try PEFile(makePE(sections: [(".cmdline", .max, .max, 0)], data: []))
        #expect(throws: PEError.sectionOutOfBounds(name: ".cmdline", offset: .max, length: .max, size: huge.bytes.count)) {
            try huge.section(".cmdline")
        }
        // Errors say what is wrong.
        #expect(PEError.badSignature(offset: 0).description == "not a valid EFI executable: no PE signature at offset 0")
        #expect(PEError.missingSection(".cmdline").description == "no '.cmdline' section")
    }

    @Test func textSectionsMustBeUTF8() throws {
        let start = peDataOffset(sections: 1)
        let uki = try UKI(makePE(sections: [(".osrel", 3, start, 3)], data: [0xFF, 0xFE, 0xFD]))
        #expect(throws: UKIError.notUTF8(section: ".osrel")) { try uki.bootLabel() }
        #expect(throws: UKIError.portableExecutable(.missingSection(".cmdline"))) { try uki.commandLine() }
        let nameless = try UKI(makePE(sections: [(".osrel", 11, start, 11)], data: Array("VERSION=42\n".utf8)))
        #expect(throws: UKIError.noName) { try nameless.bootLabel() }
    }

    @Test(.enabled(if: UKIBuilder.available, "needs objcopy and systemd's EFI stub"))
    func realUKIsAreReadSectionBySection() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("pe-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }
        var random = SplitMix64(seed: 7)
        let kernel = (0..<70_001).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        let initrd = (0..<12_345).map { _ in UInt8(truncatingIfNeeded: random.next()) }
        let osRelease = "NAME=\"Test OS\"\nPRETTY_NAME='Test OS 42 (Frobnicator)'\nVERSION_ID=42\n"
        // No trailing newline nor NUL: what is there is what is read.
        let commandLine = "composefs=?" + String(repeating: "ab", count: 32) + " rw quiet"
        try UKIBuilder.build(
            [(".osrel", Array(osRelease.utf8)), (".cmdline", Array(commandLine.utf8)), (".uname", Array("6.1.0-test".utf8)), (".linux", kernel),
             (".initrd", initrd)], to: work + "/uki.efi")
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: work + "/uki.efi")))
        let uki = try UKI(bytes)
        #expect(try uki.commandLine() == commandLine)
        #expect(try uki.text(UKI.osReleaseSection) == osRelease)
        #expect(try uki.text(UKI.unameSection) == "6.1.0-test")
        #expect(Array(try uki.section(UKI.linuxSection)) == kernel)
        #expect(Array(try uki.section(UKI.initrdSection)) == initrd)
        #expect(try uki.bootLabel() == "Test OS 42 (Frobnicator) 42")
        // The stub's own sections are there too, each where objdump says.
        #expect(uki.file.sections.map(\.name).starts(with: [".text"]))
        #expect(uki.file.sections.contains { $0.name == ".sbat" })
        let objdump = try #require(["/usr/bin/objdump"].first { FileManager.default.isExecutableFile(atPath: $0) })
        let listing = Process()
        listing.executableURL = URL(fileURLWithPath: objdump)
        listing.arguments = ["-h", work + "/uki.efi"]
        let output = Pipe()
        listing.standardOutput = output
        try listing.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        listing.waitUntilExit()
        // "  0 .text  0000bff0  0000000000004000  0000000000004000  00000400  2**4"
        var listed: [String: (size: UInt32, offset: UInt32)] = [:]
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 6, Int(fields[0]) != nil, let size = UInt32(fields[2], radix: 16), let offset = UInt32(fields[5], radix: 16)
            else { continue }
            listed[String(fields[1])] = (size, offset)
        }
        for name in [".osrel", ".cmdline", ".uname", ".linux", ".initrd"] {
            let section = try #require(uki.file.sections.first { $0.name == name })
            #expect(listed[name]?.offset == section.pointerToRawData, "\(name)")
            #expect(listed[name]?.size == section.virtualSize, "\(name)")
        }
        // The raw data is padded to the file alignment: reading SizeOfRawData bytes would be wrong.
        let cmdline = try #require(uki.file.sections.first { $0.name == ".cmdline" })
        #expect(cmdline.sizeOfRawData > cmdline.virtualSize)
    }
}
