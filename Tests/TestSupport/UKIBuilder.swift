// Real UKIs for the tests: systemd's EFI stub (Debian's systemd-boot-efi) with sections added by
// objcopy (binutils), the way UKIs were put together before ukify. scripts/test.sh installs both.

import Foundation
import Testing

public enum UKIBuilder {
    public static let stub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
    public static let objcopy = "/usr/bin/objcopy"

    /// Why UKIs cannot be built here; nil when they can.
    public static var unavailable: String? {
        if !FileManager.default.isExecutableFile(atPath: objcopy) { return "\(objcopy) is missing (binutils; scripts/test.sh installs it)" }
        if !FileManager.default.fileExists(atPath: stub) { return "\(stub) is missing (systemd-boot-efi; scripts/test.sh installs it)" }
        return nil
    }

    public static var available: Bool {
        if let reason = unavailable { print("skipping the tests with real UKIs: \(reason)") }
        return unavailable == nil
    }

    public struct BuildError: Error, CustomStringConvertible { public var description: String }

    /// Writes the stub with `sections` added (in order, each at its own address) to `path`.
    public static func build(_ sections: [(name: String, content: [UInt8])], to path: String) throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("uki-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var arguments: [String] = []
        var address = 0x100_0000
        for (index, section) in sections.enumerated() {
            let file = scratch + "/\(index)"
            try Data(section.content).write(to: URL(fileURLWithPath: file))
            arguments += [
                "--add-section", "\(section.name)=\(file)", "--change-section-vma", "\(section.name)=0x" + String(address, radix: 16),
            ]
            address += (section.content.count + 0xFFFF) / 0x10000 * 0x10000 + 0x10000
        }
        try FileManager.default.createDirectory(
            atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: objcopy)
        process.arguments = arguments + [stub, path]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw BuildError(description: "objcopy: \(message)") }
    }

    /// A UKI with a kernel, an initrd, os-release and `commandLine`.
    public static func build(commandLine: String, osRelease: String = "ID=test\nVERSION_ID=1\n", to path: String) throws {
        try build(
            [
                (".osrel", Array(osRelease.utf8)), (".cmdline", Array(commandLine.utf8)),
                (".linux", Array(repeating: 0x4B, count: 3000)), (".initrd", Array(repeating: 0x49, count: 2000)),
            ], to: path)
    }
}
