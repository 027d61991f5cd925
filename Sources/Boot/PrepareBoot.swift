// What `prepare-boot` does once the bootable image is stored, as composefs-rs 0.9: the first
// boot entry found is written to the boot directory (the others, addons included, are not),
// then the deployment's state directories are made.

import ComposeFS

public enum PrepareBoot {
    /// Writes the first of `entries` for the image `argument` boots and makes its state
    /// directories below `stateRoot`; returns the deployment's state directory.
    @discardableResult
    public static func install(
        _ entries: [BootEntry], argument: BootArgument, options: BootInstallOptions, reader: BootFileReader, stateRoot: String
    ) throws(BootError) -> String {
        guard let entry = entries.first else { throw .noBootEntries }
        let installation = try BootInstallation(entry, argument: argument, options: options, reader: reader)
        try installation.write(into: options.bootDirectory, reader: reader)
        return try DeploymentState.create(in: stateRoot, for: argument)
    }
}
