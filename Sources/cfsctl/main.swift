// cfsctl: manage a composefs repository, command-compatible with composefs-rs's cfsctl.

import ArgumentParser
import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import ComposeFSCLI
import ComposeFSMount
import Dumpfile
import FsVerity
import Repository

#if canImport(Glibc)
import Glibc
#endif

struct Cfsctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cfsctl",
        abstract: "Manage a composefs repository.",
        version: "0.3.0",
        subcommands: [
            Init.self, CreateImage.self, ComputeID.self, CreateDumpfile.self, ImageObjects.self, DumpFiles.self,
            Mount.self, ImportImage.self, Cat.self, GC.self, Fsck.self, Transaction.self, Oci.self,
        ])

    @Option(help: "The repository path") var repo: String?
    @Flag(help: "Use the user repository (~/.var/lib/composefs)") var user = false
    @Flag(help: "Use the system repository (/sysroot/composefs)") var system = false
    @Option(help: "Digest algorithm: sha256 or sha512 (must agree with meta.json)") var hash: String?
    @Flag(help: .hidden) var insecure = false
    @Flag(help: "Fail unless the repository requires fs-verity") var requireVerity = false
    @Flag(help: "Do not open a repository (compute-id and create-dumpfile only)") var noRepo = false
    // composefs-rs may write meta.json into repositories from before it existed; we never do.
    @Flag(help: "Never add meta.json to an old-format repository (the only behaviour here)") var noUpgrade = false

    func validate() throws {
        guard [repo != nil, user, system].filter({ $0 }).count <= 1 else {
            throw ValidationError("--repo, --user and --system are mutually exclusive")
        }
    }

    /// --repo, else --system/--user, else the system repository for root and the user's otherwise.
    func repositoryPath() throws -> String {
        if let repo { return repo }
        if system || (!user && geteuid() == 0) { return "/sysroot/composefs" }
        guard let home = getenv("HOME") else { throw ToolError("$HOME must be set when in user mode") }
        return String(cString: home) + "/.var/lib/composefs"
    }

    func hashAlgorithm() throws -> FsVerityAlgorithm? {
        guard let hash else { return nil }
        guard let algorithm = FsVerityAlgorithm.allCases.first(where: { $0.name == hash }) else {
            throw ToolError("invalid --hash '\(hash)': expected sha256 or sha512")
        }
        return algorithm
    }

    func openRepository() throws -> Repository {
        guard !noRepo else { throw ToolError("--no-repo is only supported for compute-id and create-dumpfile") }
        let path = try repositoryPath()
        let repository = try Repository(path: path)
        if let wanted = try hashAlgorithm(), wanted != repository.algorithm {
            throw ToolError(
                "repository is configured for \(repository.metadata.algorithm) (from meta.json) but --hash \(wanted.name) was specified")
        }
        if requireVerity && !repository.isSecure {
            throw ToolError(
                "repository was not initialized with fs-verity (hint: re-create with `cfsctl init` on a verity-capable filesystem)")
        }
        return repository
    }

    /// The algorithm for commands that need no repository: --hash, else the repository's, else SHA-512.
    func standaloneAlgorithm() throws -> FsVerityAlgorithm {
        if let algorithm = try hashAlgorithm() { return algorithm }
        if !noRepo, let path = try? repositoryPath(), let repository = try? Repository(path: path) {
            return repository.algorithm
        }
        return RepositoryAlgorithm.default.hash
    }
}

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a repository (meta.json).")
    @ParentCommand var global: Cfsctl

    @Option(help: "fsverity-sha256-12 or fsverity-sha512-12") var algorithm = RepositoryAlgorithm.default.description
    @Flag(help: "Do not require fs-verity (for file systems without it)") var insecure = false
    @Argument(help: "Where (default: the repository path)") var path: String?

    func run() throws {
        let algorithm = try RepositoryAlgorithm(parsing: algorithm)
        let path = try path ?? global.repositoryPath()
        let insecure = insecure || global.insecure
        switch try Repository.initialize(at: path, algorithm: algorithm, insecure: insecure) {
        case .created:
            writeStandardOutput(
                "Initialized composefs repository at \(path)\n  algorithm: \(algorithm)\n  verity:    "
                    + (insecure ? "not required (insecure)" : "required") + "\n")
        case .alreadyInitialized:
            writeStandardOutput("Repository already initialized at \(path)\n")
        }
    }
}

struct CreateImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-image", abstract: "Store a directory's files and its image; print the image id.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The directory") var path: String
    @Argument(help: "A ref for the image (images/refs/NAME)") var imageName: String?

    func run() throws {
        let repository = try global.openRepository()
        let progress = ProgressReporter()
        let id = try repository.createImage(from: path, name: imageName, threads: availableProcessors) { done, total in
            progress?.files("Storing files", done: done, total: total)
        }
        progress?.finish()
        writeStandardOutput(id.prefixedHex + "\n")
    }
}

struct ComputeID: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compute-id", abstract: "Print the image id of a directory without storing anything.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The directory") var path: String

    func run() throws {
        let id = try Repository.computeID(directory: path, algorithm: try global.standaloneAlgorithm(), threads: availableProcessors)
        writeStandardOutput(id.hex + "\n")
    }
}

struct CreateDumpfile: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-dumpfile", abstract: "Print the composefs-dump(5) of a directory.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The directory") var path: String

    func run() throws {
        let image = try Repository.image(of: path, algorithm: try global.standaloneAlgorithm(), threads: availableProcessors)
        let root = try ImageReader.read(image)
        let output = OutputFile.standardOutput()
        try DumpfileWriter.write(root: root) { try output.write($0) }
        try output.commit()
    }
}

struct ImageObjects: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image-objects", abstract: "List the objects an image refers to.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The image: its id or refs/NAME") var name: String

    func run() throws {
        let repository = try global.openRepository()
        let objects = try repository.imageObjects(name)
        writeStandardOutput(objects.map { $0.prefixedHex + "\n" }.sorted().joined())
    }
}

struct DumpFiles: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump-files", abstract: "Print the dumpfile lines of files in an image (directories with their contents).")
    @ParentCommand var global: Cfsctl
    @Flag(help: "Print only where each file's content is: 'inline' or its object path") var backingPathOnly = false
    @Argument(help: "The image: its id or refs/NAME") var imageName: String
    @Argument(help: "Paths inside the image, e.g. /usr/bin/sh") var files: [String] = []

    func run() throws {
        let root = try global.openRepository().readImage(imageName)
        var output: [UInt8] = []
        for file in files {
            let components = file.split(separator: "/").map { Array($0.utf8) }
            guard let name = components.last else { throw ToolError("Invalid filename \"\(file)\"") }
            var directory = root
            for component in components.dropLast() {
                guard let next = directory.entry(named: component), next.inode.isDirectory else {
                    throw ToolError("\(file) not found")
                }
                directory = next.inode
            }
            guard let entry = directory.entry(named: name) else { throw ToolError("\(file) not found") }
            if backingPathOnly {
                guard !entry.inode.isDirectory else { throw ToolError("\(file) is a directory") }
                let backing = entry.inode.isRegular && entry.inode.content == nil ? entry.inode.payload : nil
                writeStandardOutput("\(file) \(backing.map { String(decoding: $0, as: UTF8.self) } ?? "inline")\n")
                continue
            }
            DumpfileWriter.write(subtree: entry.inode, at: Array(file.utf8), isHardlink: entry.isHardlink, root: root) {
                output.append(contentsOf: $0)
            }
        }
        // As the reference: everything at once, followed by an empty line.
        if !output.isEmpty { writeStandardOutput(String(decoding: output, as: UTF8.self) + "\n") }
    }
}

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mount an image of the repository.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The image: its id (verified) or refs/NAME") var name: String
    @Argument(help: "Where to mount it") var mountpoint: String

    func run() throws {
        try mountRepositoryImage(try global.openRepository(), name: name, at: mountpoint)
    }
}

/// Mounts images/NAME with the repository's objects as the data layer.
func mountRepositoryImage(_ repository: Repository, name: String, at mountpoint: String) throws {
    let image = try repository.openImage(name)
    if !repository.isSecure {
        writeStandardError("Warning: \(repository.path) is an insecure repository (no fs-verity): mounting without verification\n")
    }
    // Verity on every backing file wherever the repository promises it.
    let options = MountOptions(
        basedirs: [repository.path + "/objects"], verity: repository.isSecure && image.verified ? .required : .off,
        readOnly: true)
    do {
        try ComposefsMount.mount(imageFileDescriptor: image.file.raw, imageName: name, at: mountpoint, options: options)
    } catch {
        throw ToolError("Failed to mount \(name): \(error)")
    }
}

struct ImportImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-image", abstract: "Store an EROFS image read from stdin under images/refs/REFERENCE.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The ref name") var reference: String

    func run() throws {
        let repository = try global.openRepository()
        let bytes = try readAll(0, path: "stdin")
        // Only well-formed composefs images may go where mounts look.
        do { _ = try ImageReader.read(bytes) } catch {
            throw ToolError("stdin is not a valid composefs image: \(error)")
        }
        let id = try repository.writeImage(bytes, name: reference)
        writeStandardOutput(id.prefixedHex + "\n")
    }
}

struct Cat: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write the original content of a split stream to stdout.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The stream, relative to streams/ (a content identifier or refs/NAME)") var name: String

    func run() throws {
        let repository = try global.openRepository()
        let output = OutputFile.standardOutput()
        try repository.cat(name) { bytes throws(RepositoryError) in
            do throws(SystemError) { try output.write(bytes) } catch { throw .system(error) }
        }
        try output.commit()
    }
}

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Remove objects no ref reaches, and dangling links.")
    @ParentCommand var global: Cfsctl
    @Option(name: [.short, .long], help: "Also keep this image or stream (by entry name)") var root: [String] = []
    @Flag(name: [.short, .long], help: "Only report what would be removed") var dryRun = false

    func run() throws {
        let repository = try global.openRepository()
        let result = try repository.collectGarbage(roots: root, dryRun: dryRun)
        var text = dryRun ? "Dry run (no files deleted):\n" : ""
        text += "Objects: \(result.objectsRemoved) removed (\(result.bytesRemoved) bytes)\n"
        if result.imagesPruned > 0 || result.streamsPruned > 0 {
            text += "Pruned symlinks: \(result.imagesPruned) images, \(result.streamsPruned) streams\n"
        }
        writeStandardOutput(text)
    }
}

struct Fsck: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check the repository's integrity.")
    @ParentCommand var global: Cfsctl
    @Flag(help: "Print a JSON report (exit status 0 whatever it finds)") var json = false
    @Flag(help: "Remove corrupt objects, stray files and dangling links") var repair = false

    func run() throws {
        let repository = try global.openRepository()
        let report = try repository.fsck(repair: repair)
        if json {
            writeStandardOutput(report.json)
            return
        }
        writeStandardOutput(report.text)
        if !report.ok { throw ToolError("repository integrity check failed") }
    }
}

struct Transaction: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hold the repository's shared lock until killed (keeps gc away).")
    @ParentCommand var global: Cfsctl

    func run() throws {
        let repository = try global.openRepository()
        writeStandardError("Holding a shared lock on \(repository.path) until stopped\n")
        withExtendedLifetime(repository) {
            while true { pause() }
        }
    }
}

Cfsctl.runAsTool(errorPrefix: "Error: ")
