// `cfsctl oci …`: container images (commands, options and output as composefs-rs 0.9's cfsctl).

import ArgumentParser
import Boot
import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import ComposeFSCLI
import Dumpfile
import FsVerity
import OCI
import Repository
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct Oci: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Commands for OCI container images.",
        subcommands: [
            OciImportLayer.self, OciDump.self, OciPull.self, OciCopy.self, OciImages.self, OciInspect.self, OciTag.self,
            OciUntag.self, OciLayer.self, OciMount.self, OciComputeID.self, OciPrepareBoot.self, OciFsck.self,
            OciCreateImage.self, OciLsLayer.self, OciVarlinkCommand.self,
        ])
    @ParentCommand var global: Cfsctl
}

extension Cfsctl {
    func openImageStore() throws -> ImageStore { ImageStore(repository: try openRepository()) }
}

extension FormatVersion {
    /// As composefs-rs prints it (`{:?}`).
    var debugName: String { "V\(rawValue)" }
}

/// An fs-verity digest given in hex, in the repository's algorithm.
func parseObjectID(_ hex: String, algorithm: FsVerityAlgorithm, what: String) throws -> ObjectID {
    guard let id = ObjectID(hex: hex, algorithm: algorithm) else {
        throw ToolError("\(what): '\(hex)' is not a \(algorithm.name) digest in hex")
    }
    return id
}

/// `<ref|@config> [config-verity]`: a tag, or a config digest with the config stream's verity.
struct OCIConfigOptions: ParsableArguments {
    @Argument(help: "Ref name (e.g. myimage:latest) or @digest of a config (e.g. @sha256:a1b2c3...)") var configName: String
    @Argument(help: "fs-verity digest of the config stream (with @digest; without it the layers are hashed again)")
    var configVerity: String?

    func selection(algorithm: FsVerityAlgorithm) throws -> ConfigSelection {
        let verity = try configVerity.map { try parseObjectID($0, algorithm: algorithm, what: "config verity") }
        switch try OCIReference(parsing: configName) {
        case let .named(name): return .tag(name)
        case let .digest(digest): return .config(digest, verity: verity)
        }
    }
}

/// The image's tree, with the transforms chosen.
struct OCIConfigFilesystemOptions: ParsableArguments {
    @OptionGroup var config: OCIConfigOptions
    @Flag(help: "Make it a bootable root: /boot and /sysroot emptied, SELinux labels") var bootable = false
    @Option(help: "Xattrs kept: allowlist-only or keep-user-xattrs") var xattrs = XattrFilter.allowlistOnly

    func rootfs(_ store: ImageStore) throws -> Inode {
        try store.rootfs(
            try config.selection(algorithm: store.repository.algorithm), options: RootfsOptions(xattrs: xattrs, bootable: bootable))
    }
}

struct OciImportLayer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-layer",
        abstract: "Store a tar layer read from stdin (gzip and zstd are recognized) as oci-layer-DIGEST; its content must match DIGEST.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The layer's diff_id, e.g. sha256:a1b2c3...") var digest: String
    @Argument(help: "Also name it streams/refs/NAME") var name: String?

    func run() throws {
        let store = try global.openImageStore()
        let id = try store.importLayer(fromFileDescriptor: 0, diffID: try Digest(parsing: digest), ref: name)
        writeStandardOutput(id.prefixedHex + "\n")
    }
}

struct OciDump: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump", abstract: "Print the dumpfile of a stored image's root file system.")
    @ParentCommand var global: Cfsctl
    @OptionGroup var options: OCIConfigFilesystemOptions

    func run() throws {
        let root = try options.rootfs(try global.openImageStore())
        let output = OutputFile.standardOutput()
        try DumpfileWriter.writeComposefsRS(root, at: [UInt8(ascii: "/")]) { try output.write($0) }
        try output.commit()
    }
}

struct OciPull: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Pull an image (oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], docker://HOST/NAME[:TAG|@DIGEST]).")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The image, in skopeo's transport syntax") var image: String
    @Argument(help: "The tag to give it (default: the image reference)") var name: String?
    @Flag(help: "Also make the bootable image") var bootable = false
    @Option(help: "Find the bootable image with this id among the xattr modes and formats (needs --bootable)") var expectedDigest: String?
    @Option(help: "Only 'disabled' is supported (containers-storage is not a source here)") var localFetch = "disabled"
    @Option(help: "USER:PASSWORD for the registry") var creds: String?
    @Option(help: "Auth file (containers-auth.json format)") var authfile: String?
    @Option(help: "Verify TLS certificates (false also allows plain HTTP)") var tlsVerify: Bool?
    @Option(help: "OS/ARCH[/VARIANT] to choose from an index (default: this machine's)") var platform: String?

    func validate() throws {
        if expectedDigest != nil && !bootable { throw ValidationError("--expected-digest requires --bootable") }
    }

    func run() throws {
        guard localFetch == "disabled" else { throw ToolError("--local-fetch \(localFetch) is not supported") }
        let store = try global.openImageStore()
        // Checked before the pull, which may take long.
        let expected = try expectedDigest.map { try parseObjectID($0, algorithm: store.repository.algorithm, what: "Parsing --expected-digest") }
        var chosenPlatform = Platform.current
        if let platform {
            let parts = platform.split(separator: "/").map(String.init)
            guard parts.count == 2 || parts.count == 3 else { throw ToolError("--platform must be OS/ARCH[/VARIANT]") }
            chosenPlatform = Platform(architecture: parts[1], os: parts[0], variant: parts.count == 3 ? parts[2] : nil)
        }
        let registry = RegistryOptions(
            credentials: creds, authFile: authfile, tlsVerify: tlsVerify, stagingDirectory: store.repository.path)
        let options = PullOptions(platform: chosenPlatform, registry: registry, parallelLayers: max(2, availableProcessors))
        let tag = name ?? image
        let progress = ProgressReporter()
        let layers = LayerBytes()
        let reference = image
        let result = try runBlocking { () async throws(OCIError) -> PullResult in
            try await store.pull(reference, tag: tag, options: options) { event in
                switch event {
                case let .message(text): progress?.message(text)
                case let .layerSkipped(diffID): progress?.message("Already have layer \(diffID)")
                case let .layerStarted(diffID, total):
                    progress?.message("Fetching layer \(diffID)")
                    layers.update(diffID, fetched: 0, total: total, on: progress)
                case let .layerProgress(diffID, fetched, total): layers.update(diffID, fetched: fetched, total: total, on: progress)
                case let .layerDone(diffID, transferred): layers.update(diffID, fetched: transferred, total: transferred, on: progress)
                case .buildingImage: progress?.message("Building composefs image")
                }
            }
        }
        progress?.finish()
        let statistics = result.statistics
        writeStandardOutput(
            """
            manifest \(result.manifestDigest)
            config   \(result.configDigest)
            verity   \(result.manifestStream.hex)
            tagged   \(tag)
            objects  \(statistics.objectsWritten) new + \(statistics.objectsPresent) already present objects; \
            \(humanBytes(statistics.bytesWritten)) stored, \(humanBytes(statistics.bytesInline)) inlined

            """)
        if let expected {
            switch try store.findBootImage(manifest: result.manifestDigest, expected: expected) {
            case let .found(xattrs, format, id):
                writeStandardOutput("Boot image: \(id.hex) (xattr-mode=\(xattrs.rawValue), format-version=\(format.debugName))\n")
            case let .notFound(tried):
                throw ToolError(
                    "No boot image configuration matched expected digest \(expected.hex) (tried \(tried) mode/version combinations)")
            }
        } else if bootable {
            writeStandardOutput("Boot image: \(try store.bootImage(manifest: result.manifestDigest).hex)\n")
        }
    }
}

/// The layers being fetched, drawn as one bar: their bytes read of their sizes.
final class LayerBytes: Sendable {
    private let layers = Mutex<[Digest: (fetched: UInt64, total: UInt64)]>([:])

    func update(_ diffID: Digest, fetched: UInt64, total: UInt64, on progress: ProgressReporter?) {
        guard let progress else { return }
        let (done, all) = layers.withLock { layers in
            layers[diffID] = (fetched, total)
            return layers.values.reduce((UInt64(0), UInt64(0))) { ($0.0 + $1.fetched, $0.1 + $1.total) }
        }
        progress.bytes(done: done, total: all)
    }
}

struct OciCopy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy", abstract: "Copy an image (and its layers) from another composefs repository into this one.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "Image to copy (tag name or @digest of a manifest)") var image: String
    @Option(help: "Path to the source composefs repository") var from: String
    @Option(help: "Tag to give the image in this repository") var name: String?
    @Flag(help: "Reflink or hard-link the objects instead of copying them (same file system and algorithm)") var zerocopy = false

    func run() throws {
        let reference = try OCIReference(parsing: image)
        let source: Repository
        do { source = try Repository(path: from, upgrade: !global.noUpgrade) } catch {
            throw ToolError("opening source repository \(from): \(error)")
        }
        let store = try global.openImageStore()
        if zerocopy {
            // composefs-rs names them as its HashType values.
            func typeName(_ algorithm: FsVerityAlgorithm) -> String { "Sha" + algorithm.name.dropFirst(3) }
            let (from, to) = (source.algorithm, store.repository.algorithm)
            guard from == to else {
                throw ToolError(
                    "--zerocopy requires matching hash algorithms; source uses \(typeName(from)) but destination uses \(typeName(to))")
            }
        }
        let result = try store.copy(reference, from: ImageStore(repository: source), name: name, zeroCopy: zerocopy)
        writeStandardOutput(
            """
            Copied image \(reference) from \(from) to destination repo\(name.map { ", tagged as \($0)" } ?? "")
            Manifest digest: \(result.manifestDigest)
            Manifest verity: \(result.manifestStream.hex)
            Config digest:   \(result.configDigest)
            Config verity:   \(result.configStream.hex)

            """)
    }
}

struct OciImages: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "images", abstract: "List the tagged images.", aliases: ["list-images"])
    @ParentCommand var global: Cfsctl
    @Flag(help: "Print JSON") var json = false

    func run() throws {
        let images = try global.openImageStore().images()
        writeStandardOutput(json ? ImageListing.json(images) : ImageListing.table(images))
    }
}

struct OciInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect", abstract: "Print an image's manifest, config, referrers and composefs images as JSON.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "A tag, or @sha256:… (a manifest digest)") var image: String
    @Flag(help: "Print only the manifest as stored") var manifest = false
    @Flag(help: "Print only the config as stored") var config = false

    func validate() throws {
        if manifest && config { throw ValidationError("--manifest and --config cannot be used together") }
    }

    func run() throws {
        let store = try global.openImageStore()
        let stored = try store.open(try OCIReference(parsing: image))
        if manifest || config {
            let output = OutputFile.standardOutput()
            try withBytes((manifest ? stored.manifestBytes : stored.configBytes) + [0x0A]) { (bytes) throws(SystemError) in try output.write(bytes) }
            try output.commit()
            return
        }
        let format = store.defaultFormat
        writeStandardOutput(
            try ImageListing.inspect(
                stored, referrers: try store.referrers(of: stored.manifestDigest), erofs: stored.imageID(format),
                bootErofs: stored.bootImageID(format)))
    }
}

struct OciTag: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tag", abstract: "Tag a stored manifest.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The manifest digest, e.g. sha256:a1b2c3...") var manifestDigest: String
    @Argument(help: "The tag (must not start with '@')") var name: String

    func run() throws {
        let store = try global.openImageStore()
        let digest = try Digest(parsing: manifestDigest)
        try store.tag(digest, as: name)
        writeStandardOutput("Tagged \(digest) as \(name)\n")
    }
}

struct OciUntag: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "untag", abstract: "Remove a tag.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The tag") var name: String

    func run() throws {
        try global.openImageStore().untag(name)
        writeStandardOutput("Removed tag \(name)\n")
    }
}

struct OciLayer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layer", abstract: "Write a stored layer as tar (or list it, or summarize it).", aliases: ["layer-inspect"])
    @ParentCommand var global: Cfsctl
    @Argument(help: "The layer's diff_id, e.g. sha256:a1b2c3...") var layer: String
    @Flag(help: "Print dumpfile lines instead of the tar") var dumpfile = false
    @Flag(help: "Print a JSON summary instead of the tar") var json = false

    func validate() throws {
        if dumpfile && json { throw ValidationError("--dumpfile and --json cannot be used together") }
    }

    func run() throws {
        let store = try global.openImageStore()
        let diffID = try Digest(parsing: layer)
        if json { return writeStandardOutput(LayerListing.json(try store.layerSummary(diffID))) }
        if dumpfile { return writeStandardOutput(LayerListing.dumpfile(try store.layerEntries(diffID).entries)) }
        guard isatty(1) == 0 else {
            throw ToolError("Refusing to write tar data to terminal. Redirect to a file, pipe to tar, or use --json for metadata.")
        }
        _ = try store.layerEntries(diffID)
        let output = OutputFile.standardOutput()
        try store.repository.cat("oci-layer-\(diffID)") { bytes throws(RepositoryError) in
            do throws(SystemError) { try output.write(bytes) } catch { throw .system(error) }
        }
        try output.commit()
    }
}

struct OciMount: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mount", abstract: "Mount an image's composefs image.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "A tag, or sha256:… (a manifest digest)") var image: String
    @Argument(help: "Where to mount it") var mountpoint: String
    @Flag(help: "Mount the bootable image instead") var bootable = false
    @Option(help: "A writable directory over the image (needs --workdir)") var upperdir: String?
    @Option(help: "overlayfs's work directory, on the same file system as --upperdir") var workdir: String?
    @Flag(help: "Mount read-write (needs --upperdir)") var readWrite = false

    func validate() throws {
        guard (upperdir == nil) == (workdir == nil) else { throw ValidationError("--upperdir and --workdir go together") }
        guard !readWrite || upperdir != nil else { throw ValidationError("--read-write needs --upperdir") }
    }

    func run() throws {
        let store = try global.openImageStore()
        let stored = try store.open(image.hasPrefix("sha256:") ? .digest(try Digest(parsing: image)) : .named(image))
        let format = store.defaultFormat
        let id: ObjectID
        if bootable {
            guard let boot = stored.bootImageID(format) else { throw ToolError("No boot EROFS image linked — try pulling with --bootable") }
            id = boot
        } else {
            guard let plain = stored.imageID(format) else { throw ToolError("No composefs EROFS image linked — try re-pulling the image") }
            id = plain
        }
        try mountRepositoryImage(
            store.repository, name: id.hex, at: mountpoint, upperdir: upperdir, workdir: workdir, readWrite: readWrite)
    }
}

struct OciComputeID: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compute-id", abstract: "Print the composefs image id of a stored image's root file system.")
    @ParentCommand var global: Cfsctl
    @OptionGroup var options: OCIConfigFilesystemOptions

    func run() throws {
        let store = try global.openImageStore()
        writeStandardOutput(try store.image(of: try options.rootfs(store), format: store.defaultFormat).id.hex + "\n")
    }
}

struct OciPrepareBoot: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare-boot",
        abstract: "Store the bootable image of a stored image, write its boot entry to the boot partition and make its state directories.",
        discussion: PrepareBootHelp.discussion)
    @ParentCommand var global: Cfsctl
    @OptionGroup var config: OCIConfigOptions
    @OptionGroup var boot: BootOptions

    func run() throws {
        let options = try boot.installOptions()
        let store = try global.openImageStore()
        let candidate = try store.bootCandidate(try config.selection(algorithm: store.repository.algorithm))
        let reader = BootFileReader.repository(store.repository)
        let entries = try BootResources.find(in: candidate.root, reader: reader)
        guard !entries.isEmpty else { throw BootError.noBootEntries }
        let argument = try store.prepareBoot(candidate)
        try PrepareBoot.install(
            entries, argument: argument, options: options, reader: reader, stateRoot: try DeploymentState.root(repository: global.repo))
    }
}

struct OciFsck: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fsck", abstract: "Check the repository and its OCI images.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "Check only this tag") var image: String?
    @Flag(help: "Print a JSON report (exit status 0 whatever it finds)") var json = false

    func run() throws {
        let store = try global.openImageStore()
        let repositoryReport = try store.repository.fsck()
        let images = try store.checkImages(only: image)
        if json { return writeStandardOutput(images.json(repository: repositoryReport)) }
        writeStandardOutput(repositoryReport.text + images.text)
        if !repositoryReport.ok || !images.ok { throw ToolError("OCI integrity check failed") }
    }
}

struct OciCreateImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-image",
        abstract: "Store a stored image's composefs image under images/refs/NAME; print its id (not in composefs-rs 0.9: pull stores the images).")
    @ParentCommand var global: Cfsctl
    @Argument(help: "Ref name or @digest of a config") var image: String
    @Argument(help: "A ref for the composefs image (images/refs/NAME)") var imageName: String?
    @Flag(help: "Make it a bootable root: /boot and /sysroot emptied, SELinux labels") var bootable = false
    @Option(help: "Xattrs kept: allowlist-only or keep-user-xattrs") var xattrs = XattrFilter.allowlistOnly

    func run() throws {
        let store = try global.openImageStore()
        let selection: ConfigSelection =
            switch try OCIReference(parsing: image) {
            case let .named(name): .tag(name)
            case let .digest(digest): .config(digest, verity: nil)
            }
        let root = try store.rootfs(selection, options: RootfsOptions(xattrs: xattrs, bootable: bootable), storeObjects: true)
        writeStandardOutput(try store.repository.commitImages(root: root, name: imageName).hex + "\n")
    }
}

struct OciLsLayer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls-layer", abstract: "List a stored layer's entries as dumpfile lines (not in composefs-rs 0.9: use `layer --dumpfile`).")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The layer's diff_id") var name: String

    func run() throws {
        let store = try global.openImageStore()
        writeStandardOutput(LayerListing.dumpfile(try store.layerEntries(try Digest(parsing: name)).entries))
    }
}
