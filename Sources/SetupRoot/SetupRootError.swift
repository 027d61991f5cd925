#if canImport(Glibc)
import Glibc
#endif
import ComposeFS
import ComposeFSBase
import ComposeFSMount
import Repository

/// Why the root was not set up. Each says what and where in one line.
public enum SetupRootError: Error, CustomStringConvertible {
    case configUnreadable(SystemError)
    /// Not TOML, or a value of the wrong type; `line` where the TOML reader stopped.
    case invalidConfig(path: String, line: Int?, reason: String)
    case commandLineUnreadable(SystemError)
    case invalidKernelArgument(BootArgumentError)
    case noKernelArgument
    case sysrootUnopenable(SystemError)
    case repository(path: String, RepositoryError)
    /// The argument names an image of another digest algorithm than the repository's objects.
    case algorithmMismatch(argument: String, repository: String, algorithm: RepositoryAlgorithm)
    /// An argument without `?` needs a repository with fs-verity (meta.json has it).
    case repositoryWithoutVerity(argument: String, repository: String)
    /// The image exists but cannot be trusted or opened (digest mismatch, no fs-verity).
    case image(argument: String, RepositoryError)
    /// None of the arguments' images is in the repository.
    case noImage(repository: String, tried: [String])
    /// A directory the deployment needs is missing (state/deploy/HEX, its etc or var, or the
    /// image's own directory under an overlay); `what` names it and where it is.
    case missingDirectory(what: String, SystemError)
    case rootFSUnopenable(path: String, SystemError)
    /// Mounting something failed; `what` names it.
    case mount(what: String, MountError)

    public var description: String {
        switch self {
        case let .configUnreadable(error):
            "cannot read the configuration: \(error)"
        case let .invalidConfig(path, line, reason):
            "invalid configuration \(path)\(line.map { " line \($0)" } ?? ""): \(reason)"
        case let .commandLineUnreadable(error):
            "cannot read the kernel command line: \(error)"
        case let .invalidKernelArgument(error):
            error.description
        case .noKernelArgument:
            "no composefs= or composefs.digest= argument in the kernel command line"
        case let .sysrootUnopenable(error):
            "cannot open the sysroot: \(error)"
        case let .repository(path, error):
            "cannot open the repository \(path): \(error)"
        case let .algorithmMismatch(argument, repository, algorithm):
            "\(argument) names an image of another digest algorithm than the repository \(repository) (\(algorithm))"
        case let .repositoryWithoutVerity(argument, repository):
            "\(argument) requires fs-verity but the repository \(repository) was initialized without it (its meta.json has no fs-verity); boot with '?' after the '=' to allow that"
        case let .image(argument, error):
            "cannot use the image of \(argument): \(error)"
        case let .noImage(repository, tried):
            "no composefs image found in \(repository)/images (tried: \(tried.joined(separator: ", ")))"
        case let .missingDirectory(what, error):
            error.code == ENOENT ? "\(what) does not exist" : "cannot open \(what): \(SystemError.message(error.code))"
        case let .rootFSUnopenable(path, error):
            "cannot clone the root file system \(path): \(SystemError.message(error.code))"
        case let .mount(what, error):
            "cannot mount \(what): \(error)"
        }
    }
}
