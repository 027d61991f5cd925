// The body of Fuzz/Sources/FuzzBoot: arbitrary bytes as what `prepare-boot` reads from an image.

import Boot
import ComposeFS
import ComposeFSBase
import Dumpfile
import FsVerity

extension Harness {
    static let bootArgument = BootArgument(
        id: ObjectID(algorithm: .sha256, bytes: [UInt8](repeating: 0xAB, count: 32))!, format: .v1, insecure: false)

    /// The bytes as a PE file (a UKI's sections and boot label), an os-release file, a Type 1
    /// entry (its arguments set, its files relocated), and a dumpfile whose tree's kernels are
    /// found and laid out for a boot directory. Refusals are fine; a written entry must carry
    /// the composefs argument as a parameter of its own, a written UKI must be the file as it is.
    public static func boot(_ bytes: [UInt8]) throws(InvariantViolation) {
        if let uki = try? UKI(bytes) {
            for name in [UKI.commandLineSection, UKI.osReleaseSection, UKI.linuxSection, UKI.unameSection, ".text", ""] {
                guard let section = try? uki.section(name) else { continue }
                let key = Array(name.utf8) + [UInt8](repeating: 0, count: 8 - name.utf8.count)
                guard let header = uki.file.sections.first(where: { $0.rawName == key }), section.count == Int(header.virtualSize) else {
                    throw InvariantViolation(description: "section \(name) is not VirtualSize bytes")
                }
            }
            _ = try? uki.bootLabel()
        }
        let text = String(decoding: bytes, as: UTF8.self)
        _ = OSRelease(text).bootLabel
        let entry = BootLoaderEntry(text)
        guard BootLoaderEntry(entry.text).lines == entry.lines else {
            throw InvariantViolation(description: "a Type 1 entry does not read back as written")
        }
        var relocated = Type1Entry(fileName: Array("x.conf".utf8), entry: entry, files: [:])
        try? relocated.relocate(to: "id")
        let options = try? BootInstallOptions(bootDirectory: "/nonexistent", entryID: nil, commandLine: [text])

        guard let root = try? DumpfileParser.parse(bytes) else { return }
        let reader = BootFileReader { file in file.inode.content ?? [] }
        guard let entries = try? BootResources.find(in: root, reader: reader) else { return }
        for entry in entries.prefix(32) {
            for options in [options, try? BootInstallOptions(bootDirectory: "/nonexistent", entryID: "id", commandLine: [])].compactMap({ $0 }) {
                guard let installation = try? BootInstallation(entry, argument: bootArgument, options: options, reader: reader),
                    case let .bytes(written)? = installation.items.last?.content
                else { continue }
                if case let .type2(uki) = entry {
                    guard written == uki.file.inode.content ?? [] else { throw InvariantViolation(description: "a UKI was changed") }
                } else if !BootLoaderEntry(String(decoding: written, as: UTF8.self)).commandLine.contains(where: { $0.raw == bootArgument.text }) {
                    throw InvariantViolation(description: "a written entry lacks the composefs argument")
                }
            }
        }
    }
}
