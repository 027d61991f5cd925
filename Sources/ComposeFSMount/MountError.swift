import ComposeFSBase

public enum MountError: Error, Equatable, CustomStringConvertible {
    /// The options make no sense together, or one is malformed.
    case invalidOptions(String)
    /// `digest=` was given but the kernel reports no fs-verity on the image file.
    case imageHasNoVerity(image: String)
    /// `digest=` was given and the image's fs-verity digest is another one.
    case imageDigestMismatch(image: String, expected: String, actual: String)
    case notComposefsImage(image: String)
    /// Verification was required but a base directory's file system (or the kernel) has no
    /// fs-verity, so overlayfs could not check any backing file.
    case verityNotEnforceable(basedir: String)
    /// A system call failed; `kernelMessage` is what the kernel logged to the file system
    /// context, if anything.
    case system(SystemError, kernelMessage: String = "")

    public var description: String {
        switch self {
        case let .invalidOptions(message):
            message
        case let .imageHasNoVerity(image):
            "Image \(image) has no fs-verity"
        case let .imageDigestMismatch(image, expected, actual):
            "Image \(image) has wrong fs-verity (expected \(expected), found \(actual))"
        case let .notComposefsImage(image):
            "\(image) is not a composefs image (bad magic)"
        case let .verityNotEnforceable(basedir):
            "verity required but the file system of basedir '\(basedir)' (or this kernel) does not support fs-verity"
        case let .system(error, kernelMessage):
            error.description + (kernelMessage.isEmpty ? "" : " (\(kernelMessage))")
        }
    }
}
