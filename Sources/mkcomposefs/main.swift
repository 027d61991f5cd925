// mkcomposefs: build a composefs image from a directory or a dumpfile.
// Options, output and exit codes follow the reference mkcomposefs.

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

struct Mkcomposefs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mkcomposefs",
        abstract: "Create a composefs image.",
        usage: "mkcomposefs [OPTIONS] SOURCE IMAGE")

    @Option(name: .customLong("digest-store"), help: ArgumentHelp("Store content files in this directory", valueName: "PATH"))
    var digestStore: String?

    @Flag(name: .customLong("use-epoch"), help: "Make all mtimes zero")
    var useEpoch = false

    @Flag(name: .customLong("skip-devices"), help: "Don't store device nodes")
    var skipDevices = false

    @Flag(name: .customLong("skip-xattrs"), help: "Don't store file xattrs")
    var skipXattrs = false

    @Flag(name: .customLong("user-xattrs"), help: "Only store user.* xattrs")
    var userXattrs = false

    @Flag(name: .customLong("print-digest"), help: "Print the digest of the image")
    var printDigest = false

    @Flag(name: .customLong("print-digest-only"), help: "Print the digest of the image, don't write image")
    var printDigestOnly = false

    @Flag(name: .customLong("from-file"), help: "The source is a dump file, not a directory")
    var fromFile = false

    @Option(
        name: .customLong("min-version"),
        help: ArgumentHelp(
            "Use this minimal format version (default=0; 0 and 1 are the C formats, 2 is composefs-rs's, written only as the minimum)",
            valueName: "N"))
    var minVersion: String?

    @Option(
        name: .customLong("max-version"),
        help: ArgumentHelp("Use this maximum format version (default=1; a minimum of 0 is raised to 1 only for whiteouts)", valueName: "N"))
    var maxVersion: String?

    @Option(name: .customLong("threads"), help: ArgumentHelp("Number of threads used to compute digests and copy files (default: number of CPUs)", valueName: "N"))
    var threads: String?

    @Argument(help: "Source directory, or dumpfile with --from-file ('-' for stdin)")
    var source: String

    @Argument(help: "Image to write ('-' for stdout); omitted with --print-digest-only")
    var image: String?

    mutating func run() throws {
        let options = try imageOptions()
        let threadCount = try parseThreads()
        guard !source.isEmpty else { throw ToolError("Empty source path specified") }
        if printDigestOnly {
            guard image == nil else { throw ToolError("Cannot specify destination path with --print-digest-only") }
        } else {
            guard image != nil else { throw ToolError("No destination path specified") }
        }
        if skipXattrs && userXattrs { throw ToolError("--skip-xattrs and --user-xattrs conflict") }

        // Open the destination first, like the reference, so a bad path fails fast.
        let output: OutputFile?
        if let image {
            if image == "-" {
                guard isatty(1) == 0 else { throw ToolError("stdout is a tty.  Refusing to use it") }
                output = .standardOutput()
            } else {
                do { output = try OutputFile(creating: image) } catch { throw ToolError("failed to open output file: \(error)") }
            }
        } else {
            output = nil
        }

        let root = fromFile ? try readDumpfile() : try readDirectory(threads: threadCount)

        var hasher = FsVerityHasher(algorithm: .sha256)
        let wantDigest = printDigest || printDigestOnly
        do {
            try ImageWriter.write(root: root, options: options) { chunk in
                if wantDigest { hasher.update(chunk) }
                try output?.write(chunk)
            }
            try output?.commit()
        } catch {
            throw ToolError("cannot write file: \(error)")
        }
        if wantDigest {
            print(hasher.finalize().hex)
        }
        // Done: skip tearing down the tree object by object.
        fflush(nil)
        Glibc.exit(0)
    }

    /// The reference's rule: with neither option the range is 0...1; with either,
    /// the other defaults to 0 (and a maximum below the minimum is raised to it).
    private func imageOptions() throws -> ImageOptions {
        guard minVersion != nil || maxVersion != nil else { return ImageOptions() }
        func parse(_ text: String?, _ what: String) throws -> UInt32 {
            guard let text else { return 0 }
            guard let value = Int(text), value >= 0 else { throw ToolError("Invalid \(what) version \(text)") }
            guard value <= Int(ImageOptions.maxSupportedVersion) else {
                throw ToolError("cannot write file: unsupported format version \(value)")
            }
            return UInt32(value)
        }
        let minimum = try parse(minVersion, "min")
        let maximum = try parse(maxVersion, "max")
        return ImageOptions(minVersion: minimum, maxVersion: max(minimum, maximum))
    }

    private func parseThreads() throws -> Int {
        guard let threads else { return availableProcessors }
        guard let count = Int(threads) else { throw ToolError("Invalid threads count \(threads)") }
        guard count > 0 else { throw ToolError("Invalid threads count \(count)") }
        return count
    }

    private func readDumpfile() throws -> Inode {
        let strict = DumpfileParser.strictFromEnvironment
        if source == "-" {
            do { return try DumpfileParser.parse(fileDescriptor: 0, strict: strict) } catch { throw ToolError("\(error)") }
        }
        let fd = open(source, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ToolError("open `\(source)`: " + String(cString: strerror(errno))) }
        defer { close(fd) }
        do { return try DumpfileParser.parse(fileDescriptor: fd, strict: strict) } catch { throw ToolError("\(source): \(error)") }
    }

    private func readDirectory(threads: Int) throws -> Inode {
        let scan = ScanOptions(skipXattrs: skipXattrs, userXattrsOnly: userXattrs, useEpoch: useEpoch, skipDevices: skipDevices)
        do {
            return try DirectoryTree.build(
                directory: source, options: BuildOptions(scan: scan, threads: threads), store: digestStore.map { DigestStore(path: $0) })
        } catch {
            throw ToolError(error.description)
        }
    }
}

Mkcomposefs.runAsTool()
