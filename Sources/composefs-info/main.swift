// composefs-info: print information about composefs images. Commands, options
// and output follow the reference composefs-info.

import ArgumentParser
import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import ComposeFSCLI
import Dumpfile
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

struct ComposefsInfo: ParsableCommand {
    static let usage = "composefs-info [--basedir=PATH] [--filter=NAME ...] ls|objects|missing-objects|dump|measure-file IMAGE|FILE..."

    static let configuration = CommandConfiguration(
        commandName: "composefs-info",
        abstract: "Print information about composefs images.",
        usage: usage,
        discussion: """
            ls               list files with their backing file or symlink target
            objects          list the backing files the images refer to, sorted
            missing-objects  the same, without those present under --basedir
            dump             print the images in composefs-dump(5) format
            measure-file     print the fs-verity digest of each FILE
            """)

    @Option(name: .customLong("basedir"), help: ArgumentHelp("Directory of backing files, for missing-objects", valueName: "PATH"))
    var basedir: String?

    @Option(name: .customLong("filter"), help: ArgumentHelp("Only load top-level entries with this name (repeatable)", valueName: "NAME"))
    var filter: [String] = []

    // A command word rather than subcommands, so options may come before it.
    @Argument(help: "ls, objects, missing-objects, dump or measure-file")
    var command: String?

    @Argument(help: "Images (files for measure-file)")
    var paths: [String] = []

    mutating func run() throws {
        if let bad = filter.first(where: { $0.contains("/") }) {
            throw ToolError("Filter must be a single name: \(bad)")
        }
        guard let command else { usageFailure("No command specified") }
        var out = StandardOutput()
        // Output already produced stays when a later file fails, as with the reference.
        defer { out.finish() }
        switch command {
        case "ls":
            try forEachImage { root in DumpfileWriter.writeListing(root: root) { out.append($0) } }
        case "dump":
            try forEachImage { root in DumpfileWriter.write(root: root) { out.append($0) } }
        case "objects", "missing-objects":
            let store = command == "missing-objects" ? try openBasedir() : nil
            defer { if let store { close(store) } }
            var objects = Set<[UInt8]>()
            try forEachImage { root in collectObjects(root, into: &objects) }
            let listed = objects.filter { object in store.map { !exists(object, in: $0) } ?? true }
            for object in listed.sorted(by: { compareBytes($0, $1) < 0 }) {
                out.append(object)
                out.append([UInt8(ascii: "\n")])
            }
        case "measure-file":
            guard !paths.isEmpty else { usageFailure("No files specified") }
            for path in paths { out.append(Array((try measure(path) + "\n").utf8)) }
        default:
            throw ToolError("Unknown command '\(command)'")
        }
    }

    private func forEachImage(_ body: (Inode) throws -> Void) throws {
        guard !paths.isEmpty else { usageFailure("No image path specified") }
        let names = filter.isEmpty ? nil : Set(filter.map { Array($0.utf8) })
        for path in paths {
            let image: MappedFile
            do { image = try MappedFile(path: path) } catch where error.operation == "open" {
                throw ToolError("Failed to open '\(path)': " + SystemError.message(error.code))
            } catch {
                throw ToolError("Failed to load '\(path)': \(error)")
            }
            let root: Inode
            do { root = try ImageReader.read(image.bytes, filter: names) } catch {
                throw ToolError("Failed to load '\(path)': \(error)")
            }
            try body(root)
        }
    }

    private func openBasedir() throws -> Int32? {
        guard let basedir else { return nil }
        let fd = open(basedir, O_RDONLY | O_CLOEXEC | O_DIRECTORY)
        guard fd >= 0 else { throw ToolError("Can't open basedir `\(basedir)`: " + String(cString: strerror(errno))) }
        return fd
    }

    private func measure(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ToolError("Failed to open '\(path)': " + String(cString: strerror(errno))) }
        defer { close(fd) }
        do {
            return try FsVerity.measureOrCompute(fileDescriptor: fd).hex
        } catch {
            throw ToolError("failed to measure '\(path)': \(error)")
        }
    }
}

/// Backing file paths of the regular files.
private func collectObjects(_ root: Inode, into objects: inout Set<[UInt8]>) {
    var stack = [root]
    while let inode = stack.popLast() {
        for entry in inode.entries where !entry.isHardlink {
            if entry.inode.isDirectory {
                stack.append(entry.inode)
            } else if entry.inode.isRegular, let payload = entry.inode.payload {
                objects.insert(payload)
            }
        }
    }
}

/// Whether a backing file is present in the store (leading slashes are ignored;
/// an empty path names the store itself, as with AT_EMPTY_PATH).
private func exists(_ object: [UInt8], in store: Int32) -> Bool {
    let relative = object.drop(while: { $0 == UInt8(ascii: "/") })
    guard !relative.isEmpty else { return true }
    var st = stat()
    let name = relative.map { CChar(bitPattern: $0) } + [0]
    return fstatat(store, name, &st, 0) == 0
}

private func usageFailure(_ message: String) -> Never {
    writeStandardError("\(message)\nusage: \(ComposefsInfo.usage)\n")
    exit(1)
}

/// Buffered standard output (one write per 64 KiB rather than per line).
private struct StandardOutput {
    private static let capacity = 64 * 1024
    private var buffer: [UInt8] = []
    private let file = OutputFile.standardOutput()

    mutating func append(_ bytes: some Collection<UInt8>) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= Self.capacity { flush() }
    }

    /// Writes what is buffered; write errors end the program.
    mutating func flush() {
        do {
            try buffer.withUnsafeBytes { try file.write($0) }
        } catch {
            writeStandardError("composefs-info: \(error)\n")
            exit(1)
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Flushes for the last time (and keeps `OutputFile` from discarding the output).
    mutating func finish() {
        flush()
        try? file.commit()
    }
}

ComposefsInfo.runAsTool()
