// composefs-dump: read a composefs image and write it again (as the reference
// composefs-dump does, keeping the format version of the source), or, without
// a destination, print it as a composefs-dump(5) file.

import ArgumentParser
import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import ComposeFSCLI
import Dumpfile

#if canImport(Glibc)
import Glibc
#endif

struct ComposefsDump: ParsableCommand {
    static let usage = "composefs-dump SRC [DEST]"

    static let configuration = CommandConfiguration(
        commandName: "composefs-dump",
        abstract: "Rewrite a composefs image, or print it as a dumpfile.",
        usage: usage)

    @Argument(help: "The image to read")
    var source: String?

    @Argument(help: "The image to write, with the source's format version; without it the dumpfile goes to stdout")
    var destination: String?

    mutating func run() throws {
        guard let source else {
            writeStandardError("No source path specified\nusage: \(Self.usage)\n")
            Glibc.exit(1)
        }
        let (root, version) = try load(source)
        guard let destination else {
            try printDump(root)
            return
        }
        let output: OutputFile
        do { output = try OutputFile(creating: destination) } catch {
            throw ToolError("failed to open '\(destination)': " + SystemError.message(error.code))
        }
        do {
            try ImageWriter.write(root: root, options: ImageOptions(minVersion: version, maxVersion: version)) { chunk in
                try output.write(chunk)
            }
            try output.commit()
        } catch {
            throw ToolError("cannot write file: \(error)")
        }
    }

    private func load(_ path: String) throws -> (Inode, UInt32) {
        let image: MappedFile
        do { image = try MappedFile(path: path) } catch {
            throw ToolError("Failed to open '\(path)': " + SystemError.message(error.code))
        }
        let version: UInt32
        do { version = try ImageReader.version(of: image.bytes) } catch {
            throw ToolError("Failed to get image version '\(path)': \(error)")
        }
        do { return (try ImageReader.read(image.bytes), version) } catch {
            throw ToolError("Failed to load '\(path)': \(error)")
        }
    }

    private func printDump(_ root: Inode) throws {
        let output = OutputFile.standardOutput()
        do {
            try DumpfileWriter.write(root: root) { try output.write($0) }
            try output.commit()
        } catch {
            throw ToolError("write error: \(error)")
        }
    }
}

ComposefsDump.runAsTool()
