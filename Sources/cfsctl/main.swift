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
            Init.self, Transaction.self, Cat.self, GC.self, ImportImage.self, Images.self, Mount.self, CreateImage.self,
            ComputeID.self, ComputeKarg.self, CreateDumpfile.self, ImageObjects.self, DumpFiles.self, Fsck.self, Oci.self,
            VarlinkCommand.self, PrepareBootDirectory.self,
        ])

    @Option(help: "The repository path") var repo: String?
    @Flag(help: "Use the user repository (~/.var/lib/composefs)") var user = false
    @Flag(help: "Use the system repository (/sysroot/composefs)") var system = false
    @Option(help: "Digest algorithm: sha256 or sha512 (must agree with meta.json)") var hash: String?
    @Option(help: "EROFS format of the images written: 0, 1 or 2 (default: the repository's, else 1)")
    var erofsVersion: FormatVersion?
    @Flag(help: .hidden) var insecure = false
    @Flag(help: "Fail unless the repository requires fs-verity") var requireVerity = false
    @Flag(help: "Fail on a repository without meta.json instead of giving it one") var noUpgrade = false
    @Flag(help: "Do not open a repository (compute-id, compute-karg and create-dumpfile only)") var noRepo = false

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

    /// Opens the repository as composefs-rs does: upgraded if it predates meta.json (unless
    /// --no-upgrade), checked against --hash, --insecure and --require-verity applied, and
    /// --erofs-version overriding meta.json's formats for this run.
    func openRepository() throws -> Repository {
        guard !noRepo else { throw ToolError("--no-repo is only supported for compute-id, compute-karg and create-dumpfile") }
        let path = try repositoryPath()
        let repository = try Repository(path: path, upgrade: !noUpgrade)
        if let wanted = try hashAlgorithm(), wanted != repository.algorithm {
            throw ToolError(
                "repository is configured for \(repository.metadata.algorithm) (from meta.json) but --hash \(wanted.name) was specified")
        }
        if insecure { repository.treatAsInsecure() }
        if requireVerity && !repository.isSecure {
            throw ToolError(
                "repository was not initialized with fs-verity (hint: re-create with `cfsctl init` on a verity-capable filesystem)")
        }
        repository.formatOverride = erofsVersion
        return repository
    }

    /// The algorithm for commands that need no repository: --hash, else the repository's if
    /// one can be found (read only, never upgraded), else SHA-512.
    func standaloneAlgorithm() throws -> FsVerityAlgorithm {
        if let algorithm = try hashAlgorithm() { return algorithm }
        if !noRepo, let path = try? repositoryPath(), let algorithm = try? Repository.detectAlgorithm(at: path) {
            return algorithm.hash
        }
        return RepositoryAlgorithm.default.hash
    }

    /// The format of images computed without a repository: --erofs-version, else V1.
    var standaloneFormat: FormatVersion { erofsVersion ?? .v1 }
}

extension FormatVersion: ExpressibleByArgument {}
extension XattrFilter: ExpressibleByArgument {}

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a repository (meta.json).")
    @ParentCommand var global: Cfsctl

    @Option(help: "fsverity-sha256-12 or fsverity-sha512-12") var algorithm = RepositoryAlgorithm.default.description
    @Flag(help: "Do not require fs-verity (for file systems without it)") var insecure = false
    @Flag(help: "Remove streams/, images/ and meta.json first, keeping the objects") var resetMetadata = false
    @Flag(help: "Keep an existing repository as it is (upgrading one from before meta.json)") var ensure = false
    @Option(help: "EROFS format of the repository's images: 0, 1 or 2 (default 1)") var erofsVersion: FormatVersion?
    @Argument(help: "Where (default: the repository path)") var path: String?

    func run() throws {
        let algorithm = try RepositoryAlgorithm(parsing: algorithm)
        let path = try path ?? global.repositoryPath()
        let insecure = insecure || global.insecure
        let format = erofsVersion ?? global.erofsVersion ?? .v1
        if resetMetadata { try Repository.resetMetadata(at: path) }
        let result =
            ensure
            ? try Repository.ensure(at: path, algorithm: algorithm, erofsVersion: format, insecure: insecure)
            : try Repository.initialize(at: path, algorithm: algorithm, erofsVersion: format, insecure: insecure)
        switch result {
        case .created:
            writeStandardOutput(
                "Initialized composefs repository at \(path)\n  algorithm: \(algorithm)\n  verity:    "
                    + (insecure ? "not required (insecure)" : "required") + "\n")
        case .alreadyInitialized:
            writeStandardOutput("Repository already initialized at \(path)" + (ensure ? " (existing configuration preserved)" : "") + "\n")
        case .upgraded:
            writeStandardOutput("Upgraded legacy repository at \(path)\n")
        }
    }
}

/// How a directory becomes a tree: composefs-rs's container-root and boot transforms.
struct TreeOptions: ParsableArguments {
    @Flag(help: "Keep the root's own metadata, /run's contents and every xattr") var noPropagateUsrToRoot = false
    @Option(help: "Xattrs kept (without --no-propagate-usr-to-root): allowlist-only or keep-user-xattrs")
    var xattrs = XattrFilter.allowlistOnly
    @Argument(help: "The directory") var path: String

    func options(bootable: Bool) -> DirectoryImageOptions {
        DirectoryImageOptions(containerRoot: noPropagateUsrToRoot ? nil : xattrs, bootable: bootable)
    }
}

struct CreateImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-image", abstract: "Store a directory's files and its image; print the image id.")
    @ParentCommand var global: Cfsctl
    @Flag(help: "Make it a bootable root: /boot and /sysroot emptied, SELinux labels") var bootable = false
    @OptionGroup var tree: TreeOptions
    @Argument(help: "A ref for the image (images/refs/NAME)") var imageName: String?

    func run() throws {
        let repository = try global.openRepository()
        let progress = ProgressReporter()
        let id = try repository.createImage(
            from: tree.path, name: imageName, options: tree.options(bootable: bootable), threads: availableProcessors
        ) { done, total in
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
    @Flag(help: "Make it a bootable root: /boot and /sysroot emptied, SELinux labels") var bootable = false
    @OptionGroup var tree: TreeOptions

    func run() throws {
        let id = try Repository.computeID(
            directory: tree.path, algorithm: try global.standaloneAlgorithm(), format: global.standaloneFormat,
            options: tree.options(bootable: bootable), threads: availableProcessors)
        writeStandardOutput(id.hex + "\n")
    }
}

struct ComputeKarg: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compute-karg", abstract: "Print the kernel argument naming a directory's bootable image.")
    @ParentCommand var global: Cfsctl
    @Flag(help: "Keep the root's own metadata, /run's contents and every xattr") var noPropagateUsrToRoot = false
    @Argument(help: "The directory") var path: String

    func run() throws {
        let algorithm = try global.standaloneAlgorithm()
        let format = global.standaloneFormat
        let id = try Repository.computeID(
            directory: path, algorithm: algorithm, format: format,
            options: DirectoryImageOptions(containerRoot: noPropagateUsrToRoot ? nil : .allowlistOnly, bootable: true),
            threads: availableProcessors)
        writeStandardOutput(BootArgument(id: id, format: format, insecure: global.insecure).text + "\n")
    }
}

struct CreateDumpfile: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-dumpfile", abstract: "Print the composefs-dump(5) of a directory.")
    @ParentCommand var global: Cfsctl
    @Flag(help: "Make it a bootable root: /boot and /sysroot emptied, SELinux labels") var bootable = false
    @OptionGroup var tree: TreeOptions

    func run() throws {
        let root = try Repository.tree(
            of: tree.path, algorithm: try global.standaloneAlgorithm(), options: tree.options(bootable: bootable),
            threads: availableProcessors)
        let output = OutputFile.standardOutput()
        try DumpfileWriter.writeComposefsRS(root, at: [UInt8(ascii: "/")]) { try output.write($0) }
        try output.commit()
    }
}

struct ImageObjects: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image-objects", abstract: "List the objects an image refers to.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The image: its id, a ref name or refs/NAME") var name: String

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
    @Argument(help: "The image: its id, a ref name or refs/NAME") var imageName: String
    @Argument(help: "Paths inside the image, e.g. /usr/bin/sh") var files: [String] = []

    func run() throws {
        let root = try global.openRepository().readImage(imageName)
        ContainerRoot.removeOverlayMarkers(root)
        var output: [UInt8] = []
        // Nothing is printed unless every file is found, as in composefs-rs.
        for file in files {
            let inode = try lookUp(file, in: root)
            if backingPathOnly {
                guard !inode.isDirectory else { throw ToolError("\(file) is a directory") }
                let object = inode.isRegular && inode.content == nil ? inode.digest?.objectPath : nil
                output += Array("\(file) \(object ?? "inline")\n".utf8)
                continue
            }
            DumpfileWriter.writeComposefsRS(inode, at: Array(file.utf8)) { output.append(contentsOf: $0) }
        }
        writeStandardOutput(String(decoding: output, as: UTF8.self))
    }

    /// The inode at `file`, with composefs-rs's messages when there is none.
    func lookUp(_ file: String, in root: Inode) throws -> Inode {
        let components = file.split(separator: "/", omittingEmptySubsequences: true)
        guard let name = components.last, !components.contains(where: { $0 == "." || $0 == ".." }) else {
            throw ToolError("Invalid filename \"\(file)\"")
        }
        var directory = root
        for component in components.dropLast() {
            guard let entry = directory.entry(named: Array(component.utf8)) else {
                let parent = file.hasPrefix("/") ? "/" + components.dropLast().joined(separator: "/") : components.dropLast().joined(separator: "/")
                throw ToolError("Directory entry \"\(parent)\" does not exist")
            }
            guard entry.inode.isDirectory else { throw ToolError("Directory entry \"\(component)\" is not a subdirectory") }
            directory = entry.inode
        }
        guard let entry = directory.entry(named: Array(name.utf8)) else { throw ToolError("\(file) not found") }
        return entry.inode
    }
}

struct Images: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the images that have a ref (images/refs/).", aliases: ["list-images"])
    @ParentCommand var global: Cfsctl
    @Flag(help: "Print JSON") var json = false
    @Flag(help: "Print whole digests") var noTrunc = false

    func run() throws {
        let refs = try global.openRepository().imageRefs()
        if json {
            writeStandardOutput(ImageRefListing.json(refs))
        } else {
            writeStandardOutput(ImageRefListing.table(refs, truncate: !noTrunc))
        }
    }
}

/// How `mount` mounts: the kernel (EROFS and overlayfs, root only) or FUSE.
enum FuseMode: String, ExpressibleByArgument, CaseIterable {
    /// FUSE unless root in the initial user namespace.
    case auto
    case yes
    case no
}

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mount an image of the repository.")
    @ParentCommand var global: Cfsctl
    @Option(help: "Mount through FUSE: auto (unless root in the initial user namespace), yes or no") var fuse = FuseMode.auto
    @Flag(help: "With FUSE, serve in the foreground until unmounted") var foreground = false
    @Option(help: "A writable directory over the image (needs --workdir)") var upperdir: String?
    @Option(help: "overlayfs's work directory, on the same file system as --upperdir") var workdir: String?
    @Flag(help: "Mount read-write (needs --upperdir)") var readWrite = false
    @Argument(help: "The image: its id (verified), a ref name or refs/NAME") var name: String
    @Argument(help: "Where to mount it") var mountpoint: String

    func validate() throws {
        guard (upperdir == nil) == (workdir == nil) else { throw ValidationError("--upperdir and --workdir go together") }
        guard !readWrite || upperdir != nil else { throw ValidationError("--read-write needs --upperdir") }
    }

    func run() throws {
        let repository = try global.openRepository()
        let useFuse = fuse == .yes || (fuse == .auto && !(geteuid() == 0 && inInitialUserNamespace()))
        guard useFuse else {
            return try mountRepositoryImage(
                repository, name: name, at: mountpoint, upperdir: upperdir, workdir: workdir, readWrite: readWrite)
        }
        guard upperdir == nil else { throw ToolError("--upperdir needs a kernel mount (--fuse no, as root)") }
        try serveThroughFuse(repository)
    }

    /// Becomes composefs-fuse serving the image with the repository's objects (it returns
    /// once the mount is up, unless --foreground).
    func serveThroughFuse(_ repository: Repository) throws -> Never {
        let image = try repository.openImage(name)
        guard let imagePath = realpath("/proc/self/fd/\(image.file.raw)", nil) else {
            throw ToolError("cannot resolve the image \(name): \(String(cString: strerror(errno)))")
        }
        defer { free(imagePath) }
        var options = "source=" + String(cString: imagePath) + ",basedir=" + repository.path + "/objects"
        if repository.isSecure && image.verified { options += ",verity" }
        var executable = "composefs-fuse"
        if let me = realpath("/proc/self/exe", nil) {
            let sibling = String(String(cString: me).reversed().drop { $0 != "/" }.reversed()) + "composefs-fuse"
            free(me)
            if access(sibling, X_OK) == 0 { executable = sibling }
        }
        let arguments = [executable, "-o", options] + (foreground ? ["-f"] : []) + [mountpoint]
        var pointers = arguments.map { strdup($0) } + [nil]
        // The daemon must not keep the caller's descriptors (a pipe or socket it waits on).
        closeInheritedDescriptorsOnExec()
        execvp(executable, &pointers)
        throw ToolError("cannot run \(executable): \(String(cString: strerror(errno)))")
    }

    /// Whether this process is in the initial user namespace (its inode is fixed by the kernel).
    func inInitialUserNamespace() -> Bool {
        var info = stat()
        return stat("/proc/self/ns/user", &info) == 0 && info.st_ino == 0xEFFF_FFFD
    }
}

/// Mounts images/NAME with the repository's objects as the data layer.
func mountRepositoryImage(
    _ repository: Repository, name: String, at mountpoint: String, upperdir: String? = nil, workdir: String? = nil,
    readWrite: Bool = false
) throws {
    let image = try repository.openImage(name)
    if !repository.isSecure {
        writeStandardError("Warning: \(repository.path) is an insecure repository (no fs-verity): mounting without verification\n")
    }
    // Verity on every backing file wherever the repository promises it.
    let options = MountOptions(
        basedirs: [repository.path + "/objects"], verity: repository.isSecure && image.verified ? .required : .off,
        readOnly: !readWrite, upperdir: upperdir, workdir: workdir)
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
    @Flag(help: "Do not check the objects' digests") var metadataOnly = false
    @Flag(help: "Remove corrupt objects and dangling links") var repair = false

    func run() throws {
        let repository = try global.openRepository()
        let report = try repository.fsck(repair: repair, metadataOnly: metadataOnly)
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

serveVarlinkIfActivatedBare()
Cfsctl.runAsTool(errorPrefix: "Error: ")
