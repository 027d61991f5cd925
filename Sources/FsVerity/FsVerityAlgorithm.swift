/// Hash algorithms defined by fs-verity (`FS_VERITY_HASH_ALG_*` in `<linux/fsverity.h>`).
public enum FsVerityAlgorithm: UInt8, Sendable, CaseIterable {
    case sha256 = 1
    case sha512 = 2

    /// Size in bytes of one digest.
    public var digestSize: Int {
        switch self {
        case .sha256: 32
        case .sha512: 64
        }
    }

    /// Name as used by `fsverity digest --hash-alg=` and in digest prefixes (`sha256:...`).
    public var name: String {
        switch self {
        case .sha256: "sha256"
        case .sha512: "sha512"
        }
    }
}
