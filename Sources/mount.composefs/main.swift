// mount.composefs: mount a composefs image, directly or as mount(8)'s helper for
// `mount -t composefs IMAGE -o basedir=DIR MOUNTPOINT`.

import ArgumentParser
import ComposeFSCLI
import ComposeFSMount

struct MountComposefs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount.composefs",
        abstract: "Mount a composefs image.",
        usage: "mount.composefs [-t type] [-o opt[,opts..]] IMAGE MOUNTPOINT",
        discussion: """
            Options (comma-separated, after -o):
              basedir=PATH[:PATH]    Object store(s) holding the files' content
              digest=DIGEST          Required fs-verity digest of the image (implies verity)
              idmap=PATH             User namespace whose ID mapping the mount gets
              verity                 Require every file to have a matching fs-verity digest
              tryverity              Require fs-verity where the kernel and basedir support it
              ro                     Read only
              rw                     Read/write (with upperdir and workdir)
              upperdir=PATH          overlayfs upper directory
              workdir=PATH           overlayfs work directory
            """)

    @Option(name: .customShort("t"), help: "File system type (must be composefs)")
    var type: String?

    @Option(name: .customShort("o"), help: "Mount options")
    var options: [String] = []

    // mount(8) passes these to helpers; they change nothing here.
    @Flag(name: .customShort("s"), help: .hidden) var sloppy = false
    @Flag(name: .customShort("n"), help: .hidden) var noMtab = false
    @Flag(name: .customShort("v"), help: .hidden) var verbose = false

    @Argument(help: "The composefs image")
    var image: String

    @Argument(help: "Where to mount it")
    var mountpoint: String

    func run() throws {
        if let type, type != "composefs" {
            throw ToolError("Unsupported fs type '\(type)'")
        }
        do {
            let mountOptions = try MountOptions(parsing: options.joined(separator: ","))
            try ComposefsMount.mount(image: image, at: mountpoint, options: mountOptions)
        } catch let .invalidOptions(message) {
            throw ToolError(message)
        } catch {
            throw ToolError("Failed to mount composefs \(image): \(error)")
        }
    }
}

MountComposefs.runAsTool()
