// `cfsctl prepare-boot` (a directory; not in composefs-rs 0.9) and what it shares with
// `cfsctl oci prepare-boot`.

import ArgumentParser
import Boot
import ComposeFSBase
import ComposeFSCLI
import Repository

/// `--bootdir`, `--entry-id` and `--cmdline`, as composefs-rs 0.9's `oci prepare-boot`.
struct BootOptions: ParsableArguments {
    @Option(help: "The boot partition's mount point") var bootdir = "/boot"
    @Option(help: "Boot entry identifier: the Type 1 entry becomes ENTRY-ID.conf with its files in /ENTRY-ID/, a UKI ENTRY-ID.efi")
    var entryId: String?
    @Option(help: "More kernel command line for a Type 1 entry (repeatable)") var cmdline: [String] = []

    func installOptions() throws -> BootInstallOptions {
        try BootInstallOptions(bootDirectory: bootdir, entryID: entryId, commandLine: cmdline)
    }
}

enum PrepareBootHelp {
    static let discussion = """
        The kernels are found in the image's tree before the boot transform empties /boot, as \
        composefs-rs 0.9 finds them: Type 1 entries in /boot/loader/entries, UKIs (and addons) \
        below /boot/EFI/Linux, /boot/loader/addons and /usr/lib/modules/KVER/, then \
        /usr/lib/modules/KVER/vmlinuz with initramfs.img. The first one found is written: a \
        Type 1 entry's files at the paths it names (in /ENTRY-ID/ with --entry-id) and the entry \
        to loader/entries/, with the composefs kernel argument and the --cmdline arguments on its \
        options line; a UKI copied to EFI/Linux/, refused unless its own .cmdline names this \
        image. Nothing is written unless all of it can be. Then STATE/state/deploy/ID/var, \
        etc/upper and etc/work are made, STATE being the parent of --repo (/sysroot otherwise).
        """
}

struct PrepareBootDirectory: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare-boot",
        abstract:
            "Store a directory's files and bootable image, write its boot entry to the boot partition and make its state directories; print the kernel argument (not in composefs-rs 0.9).",
        discussion: PrepareBootHelp.discussion)
    @ParentCommand var global: Cfsctl
    @OptionGroup var boot: BootOptions
    @OptionGroup var tree: TreeOptions
    @Argument(help: "A ref for the image (images/refs/NAME)") var imageName: String?

    func run() throws {
        let options = try boot.installOptions()
        let repository = try global.openRepository()
        let containerRoot = tree.options(bootable: true).containerRoot
        let (entries, reader) = try DirectoryBoot.entries(of: tree.path, containerRoot: containerRoot)
        guard !entries.isEmpty else { throw BootError.noBootEntries }
        let progress = ProgressReporter()
        let argument = try repository.createBootImages(
            from: tree.path, name: imageName, containerRoot: containerRoot, threads: availableProcessors
        ) { done, total in
            progress?.files("Storing files", done: done, total: total)
        }
        progress?.finish()
        try PrepareBoot.install(
            entries, argument: argument, options: options, reader: reader, stateRoot: try DeploymentState.root(repository: global.repo))
        writeStandardOutput(argument.text + "\n")
    }
}
