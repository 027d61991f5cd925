// Helpers for running the built executables.

import Foundation

/// The directory holding the built products (the test bundle sits beside them).
func productsDirectory() -> URL {
    var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    // …/debug/composefs-swiftPackageTests.xctest (a file on Linux)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("mkcomposefs").path) { return url }
    }
    return URL(fileURLWithPath: ".build/debug")
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

func run(_ executable: String, _ arguments: [String], stdin: String? = nil, environment: [String: String]? = nil) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    // Capture through files: no pipe can fill up and block the child.
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("cfs-run-\(UUID().uuidString)")
    _ = FileManager.default.createFile(atPath: scratch.path + ".out", contents: nil)
    _ = FileManager.default.createFile(atPath: scratch.path + ".err", contents: nil)
    defer {
        try? FileManager.default.removeItem(atPath: scratch.path + ".out")
        try? FileManager.default.removeItem(atPath: scratch.path + ".err")
    }
    process.standardOutput = FileHandle(forWritingAtPath: scratch.path + ".out")
    process.standardError = FileHandle(forWritingAtPath: scratch.path + ".err")
    if let stdin { process.standardInput = FileHandle(forReadingAtPath: stdin) }
    try process.run()
    process.waitUntilExit()
    let outData = FileManager.default.contents(atPath: scratch.path + ".out") ?? Data()
    let errData = FileManager.default.contents(atPath: scratch.path + ".err") ?? Data()
    return ProcessResult(
        status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
        stderr: String(decoding: errData, as: UTF8.self))
}

func runTool(_ name: String, _ arguments: [String], stdin: String? = nil, environment: [String: String]? = nil) throws -> ProcessResult {
    try run(productsDirectory().appendingPathComponent(name).path, arguments, stdin: stdin, environment: environment)
}

func findExecutable(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin:/usr/sbin:/sbin").split(separator: ":") + ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// Regular files under `path`, relative, sorted.
func listFiles(_ path: String) throws -> [String] {
    guard let walker = FileManager.default.enumerator(atPath: path) else { return [] }
    var files: [String] = []
    while let next = walker.nextObject() as? String {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path + "/" + next, isDirectory: &isDirectory), !isDirectory.boolValue {
            files.append(next)
        }
    }
    return files.sorted()
}

func sha256Hex(of path: String) throws -> String {
    String(try run("/usr/bin/sha256sum", [path]).stdout.prefix(64))
}

/// A scratch directory removed when the value goes away.
final class TemporaryDirectory {
    let url: URL

    /// A new directory under `parent` (the temporary directory by default).
    init(in parent: String? = nil) throws {
        let base = parent.map { URL(fileURLWithPath: $0) } ?? FileManager.default.temporaryDirectory
        url = base.appendingPathComponent("cfs-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}
