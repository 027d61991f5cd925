import ComposeFSBase
import Foundation
import FsVerity
import Testing
import TestSupport

/// Deterministic pseudo-random bytes, so failures are reproducible.
func pseudoRandomBytes(count: Int, seed: UInt64) -> [UInt8] {
    var generator = SplitMix64(seed: seed)
    return generator.bytes(count: count)
}

/// A temporary directory removed when the value is deinitialized.
final class TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array((NSTemporaryDirectory() + "/fsverity-tests.XXXXXX").utf8CString)
        guard let created = mkdtemp(&template) else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        path = String(cString: created)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    func file(_ name: String) -> String { path + "/" + name }

    /// Writes `bytes` to a new file and returns its path.
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let path = file(name)
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw POSIXError(.EIO)
        }
        return path
    }

    /// A sparse file of `size` bytes with small `patches` written at the given offsets.
    @discardableResult
    func writeSparse(_ name: String, size: Int, patches: [(offset: Int, bytes: [UInt8])]) throws -> String {
        let path = file(name)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        for patch in patches {
            let written = patch.bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(patch.offset)) }
            guard written == patch.bytes.count else { throw POSIXError(.EIO) }
        }
        return path
    }
}

/// Opens `path` read-only for the duration of `body`.
func withOpenFile<R>(_ path: String, _ body: (Int32) throws -> R) throws -> R {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    defer { close(fd) }
    return try body(fd)
}

/// The reference implementation from fsverity-utils, when installed.
enum ReferenceTool {
    static let path = "/usr/bin/fsverity"
    static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: path) }

    /// Runs `fsverity digest` and returns the digest bytes it printed (`sha256:<hex> FILE`).
    static func digest(_ file: String, algorithm: FsVerityAlgorithm, blockSize: Int) throws -> ObjectID {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["digest", "--hash-alg=\(algorithm.name)", "--block-size=\(blockSize)", file]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let line = String(data: data, encoding: .utf8),
              let field = line.split(separator: " ").first,
              field.hasPrefix(algorithm.name + ":"),
              let digest = ObjectID(hex: field.dropFirst(algorithm.name.count + 1), algorithm: algorithm)
        else {
            throw ReferenceToolError(output: String(decoding: data, as: UTF8.self))
        }
        return digest
    }
}

struct ReferenceToolError: Error, CustomStringConvertible {
    let output: String
    var description: String { "unexpected `fsverity digest` result: \(output)" }
}

/// Every block size / algorithm combination exercised against the reference tool.
struct Configuration: Sendable, CustomTestStringConvertible {
    let algorithm: FsVerityAlgorithm
    let blockSize: Int

    var fanout: Int { blockSize / algorithm.digestSize }
    var testDescription: String { "\(algorithm.name)/\(blockSize)" }

    static let all: [Configuration] = [1024, 4096, 65536].flatMap { blockSize in
        FsVerityAlgorithm.allCases.map { Configuration(algorithm: $0, blockSize: blockSize) }
    }
}
