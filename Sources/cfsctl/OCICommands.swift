// `cfsctl oci …`: container images (commands and output as composefs-rs's cfsctl).

import ArgumentParser
import ComposeFS
import ComposeFSBase
import ComposeFSBuild
import ComposeFSCLI
import Dumpfile
import FsVerity
import OCI
import Repository

#if canImport(Glibc)
import Glibc
#endif

struct Oci: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Commands for OCI container images.",
        subcommands: [
            OciPull.self, OciImages.self, OciInspect.self, OciTag.self, OciUntag.self, OciDump.self, OciComputeID.self,
            OciCreateImage.self, OciMount.self, OciImportLayer.self, OciLsLayer.self, OciLayer.self, OciFsck.self,
        ])
    @ParentCommand var global: Cfsctl
}

extension Cfsctl {
    func openImageStore() throws -> ImageStore { ImageStore(repository: try openRepository()) }
}

struct OciPull: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pull",
        abstract: "Pull an image (oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:REF], docker://HOST/NAME[:TAG|@DIGEST]).")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The image, in skopeo's transport syntax") var image: String
    @Argument(help: "The tag to give it (default: the image reference)") var name: String?
    @Option(help: "USER:PASSWORD for the registry") var creds: String?
    @Option(help: "Auth file (containers-auth.json format)") var authfile: String?
    @Option(help: "Verify TLS certificates (false also allows plain HTTP)") var tlsVerify: Bool?
    @Option(help: "OS/ARCH[/VARIANT] to choose from an index (default: this machine's)") var platform: String?
    @Option(help: "Only 'disabled' is supported (containers-storage is not a source here)") var localFetch = "disabled"

    func run() throws {
        guard localFetch == "disabled" else { throw ToolError("--local-fetch \(localFetch) is not supported") }
        let store = try global.openImageStore()
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
        let reference = image
        let result = try runBlocking { () async throws(OCIError) -> PullResult in
            try await store.pull(reference, tag: tag, options: options) { event in
                switch event {
                case let .alreadyHaveManifest(digest): progress?.message("Already have manifest \(digest)")
                case let .fetchingConfig(digest): progress?.message("Fetching config \(digest)")
                case let .alreadyHaveLayer(diffID): progress?.message("Already have layer \(diffID)")
                case let .fetchingLayer(diffID): progress?.message("Fetching layer \(diffID)")
                case .buildingImage: progress?.message("Building composefs image")
                case let .storingManifest(digest): progress?.message("Storing manifest \(digest)")
                case let .bytes(done, total): progress?.bytes(done: done, total: total)
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
    }
}

struct OciImages: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images", abstract: "List the tagged images.", aliases: ["list-images"])
    @ParentCommand var global: Cfsctl
    @Flag(help: "Print JSON") var json = false

    func run() throws {
        let images = try global.openImageStore().images()
        writeStandardOutput(json ? ImageListing.json(images) : ImageListing.table(images))
    }
}

struct OciInspect: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Print an image's manifest and config.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "A tag, or @sha256:… (a manifest digest)") var image: String
    @Flag(help: "Print only the manifest as stored") var manifest = false
    @Flag(help: "Print only the config as stored") var config = false

    func validate() throws {
        if manifest && config { throw ValidationError("--manifest and --config cannot be used together") }
    }

    func run() throws {
        let store = try global.openImageStore()
        let stored = try store.open(manifest: try store.resolve(image))
        if manifest {
            writeStandardOutput(String(decoding: stored.manifestBytes, as: UTF8.self) + "\n")
        } else if config {
            writeStandardOutput(String(decoding: stored.configBytes, as: UTF8.self) + "\n")
        } else {
            writeStandardOutput(try ImageListing.inspect(stored, referrers: try store.referrers(of: stored.manifestDigest)))
        }
    }
}

struct OciTag: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tag", abstract: "Tag a stored manifest.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The manifest digest (sha256:…)") var manifestDigest: String
    @Argument(help: "The tag") var name: String

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

struct OciDump: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dump", abstract: "Print the dumpfile of an image's merged root file system.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "A tag, or @sha256:… (a manifest digest)") var image: String

    func run() throws {
        let store = try global.openImageStore()
        let root = try ImageReader.read(try store.composefsImage(of: try store.resolve(image), store: false))
        let output = OutputFile.standardOutput()
        try DumpfileWriter.write(root: root) { try output.write($0) }
        try output.commit()
    }
}

struct OciComputeID: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compute-id", abstract: "Print the composefs image id of an image (equal to mkcomposefs of its unpacked tree).")
    @ParentCommand var global: Cfsctl
    @Argument(help: "A tag, or @sha256:… (a manifest digest)") var image: String

    func run() throws {
        let store = try global.openImageStore()
        let bytes = try store.composefsImage(of: try store.resolve(image), store: false)
        writeStandardOutput(FsVerity.digest(of: bytes, algorithm: store.repository.algorithm).hex + "\n")
    }
}

struct OciCreateImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-image", abstract: "Build and store an image's composefs image; print its id.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "A tag, or @sha256:… (a manifest digest)") var image: String
    @Argument(help: "A ref for the composefs image (images/refs/NAME)") var imageName: String?

    func run() throws {
        let store = try global.openImageStore()
        let bytes = try store.composefsImage(of: try store.resolve(image), store: true)
        let id = try store.repository.writeImage(bytes, name: imageName)
        writeStandardOutput(id.hex + "\n")
    }
}

struct OciMount: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "mount", abstract: "Mount an image's composefs image.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "A tag, or sha256:… (a manifest digest)") var image: String
    @Argument(help: "Where to mount it") var mountpoint: String

    func run() throws {
        let store = try global.openImageStore()
        let digest = image.hasPrefix("sha256:") ? try Digest(parsing: image) : try store.resolve(image)
        guard let id = try store.open(manifest: digest).imageID else {
            throw ToolError("No composefs EROFS image linked — try re-pulling the image")
        }
        try mountRepositoryImage(store.repository, name: id.hex, at: mountpoint)
    }
}

struct OciImportLayer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-layer", abstract: "Store a tar layer read from stdin (gzip and zstd are recognized) as oci-layer-DIGEST.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The layer's diff_id (sha256:…), checked against the data") var digest: String
    @Argument(help: "Also name it streams/refs/NAME") var name: String?

    func run() throws {
        let store = try global.openImageStore()
        let id = try store.importLayer(fromFileDescriptor: 0, diffID: try Digest(parsing: digest), ref: name)
        writeStandardOutput(id.prefixedHex + "\n")
    }
}

struct OciLsLayer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls-layer", abstract: "List a stored layer's entries as dumpfile lines.")
    @ParentCommand var global: Cfsctl
    @Argument(help: "The layer's diff_id") var name: String

    func run() throws {
        let store = try global.openImageStore()
        writeStandardOutput(LayerListing.dumpfile(try store.layerEntries(try Digest(parsing: name)).entries))
    }
}

struct OciLayer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layer", abstract: "Write a stored layer as tar (or list it, or summarize it).", aliases: ["layer-inspect"])
    @ParentCommand var global: Cfsctl
    @Argument(help: "The layer's diff_id") var layer: String
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
