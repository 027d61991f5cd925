// The kernel command-line argument that names the image a system boots, in composefs-rs's
// forms: `composefs.digest=v1-<hash>-12:<hex>` for V0/V1 images, `composefs=<hex>` for V2; a
// `?` after the `=` lets the initramfs mount the image without fs-verity.

import FsVerity

public struct BootArgument: Equatable, Sendable {
    public var id: ObjectID
    public var format: FormatVersion
    /// Whether fs-verity is optional at boot.
    public var insecure: Bool

    public init(id: ObjectID, format: FormatVersion, insecure: Bool) {
        self.id = id
        self.format = format
        self.insecure = insecure
    }

    public var text: String {
        let marker = insecure ? "?" : ""
        switch format {
        case .v0, .v1: return "composefs.digest=\(marker)v1-\(id.algorithm.name)-12:\(id.hex)"
        case .v2: return "composefs=\(marker)\(id.hex)"
        }
    }
}
