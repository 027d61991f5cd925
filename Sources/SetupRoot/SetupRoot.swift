// What composefs-rs 0.9's composefs-setup-root does in the initramfs, in its order: the
// composefs image named on the kernel command line becomes the new root, with the physical
// root at /sysroot, the deployment's /etc and /var from state/deploy/HEX, and replaces the
// physical root at the sysroot mount point, so switch-root boots into it.
//
// Nothing is left mounted when anything fails: every check that can fail is made before the
// first mount, and the tree is built detached (Linux 6.15 and later) or on a private
// temporary directory (older kernels), becoming visible at the sysroot in one move.

import CComposeFSSys
import ComposeFS
import ComposeFSBase
import ComposeFSMount
import FsVerity
import Repository

#if canImport(Glibc)
import Glibc
#endif

/// One run: where, with which configuration and kernel command line.
public struct SetupRootRequest: Sendable {
    /// Where the initramfs mounted the physical root.
    public var sysroot: String
    public var config: SetupRootConfig
    public var commandLine: String
    /// A directory cloned as the new root instead of the image (testing without EROFS).
    public var rootFS: String?
    /// Where the new root goes instead of over the sysroot.
    public var target: String?
    /// Build the tree on a temporary directory with mount(2) as on kernels before 6.15, even
    /// where detached trees work (for tests of that path).
    public var forceStaging: Bool

    public init(
        sysroot: String, config: SetupRootConfig, commandLine: String, rootFS: String? = nil, target: String? = nil,
        forceStaging: Bool = false
    ) {
        self.sysroot = sysroot
        self.config = config
        self.commandLine = commandLine
        self.rootFS = rootFS
        self.target = target
        self.forceStaging = forceStaging
    }
}

public enum SetupRoot {
    public static let commandLinePath = "/proc/cmdline"

    /// systemd's workaround for GPT auto-discovered roots (systemd#35017): it needs
    /// /run/systemd/volatile-root to name the root's block device. Best effort, as in composefs-rs.
    public static func linkVolatileRoot() {
        var info = stat()
        guard stat("/dev/gpt-auto-root", &info) == 0 else { return }
        let device = UInt64(info.st_rdev)
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff)
        let minor = (device & 0xff) | ((device >> 12) & ~0xff)
        _ = symlink("/dev/block/\(major):\(minor)", "/run/systemd/volatile-root")
    }

    /// Sets the new root up and puts it in place.
    public static func run(_ request: SetupRootRequest) throws(SetupRootError) {
        let sysroot: FileDescriptor
        do throws(SystemError) {
            sysroot = try FileDescriptor.open(request.sysroot, cfs_o_path() | O_DIRECTORY)
        } catch {
            throw .sysrootUnopenable(error)
        }
        let arguments: [BootArgument]
        do throws(BootArgumentError) { arguments = try BootArgument.all(in: request.commandLine) } catch {
            throw .invalidKernelArgument(error)
        }
        guard let first = arguments.first else { throw .noKernelArgument }

        let root: NewRoot
        let deployment: BootArgument
        if let rootFS = request.rootFS {
            root = .directory(rootFS)
            deployment = first
        } else {
            (root, deployment) = try selectImage(arguments, sysroot: request.sysroot)
        }
        let state = try StateDirectories(
            sysroot: sysroot, sysrootPath: request.sysroot, deployment: deployment.id.hex, config: request.config)
        let plan = TreePlan(root: root, sysroot: sysroot, sysrootPath: request.sysroot, state: state, config: request.config)
        let target = request.target ?? request.sysroot
        if !request.forceStaging && DetachedTree.isSupported() {
            try DetachedTree.build(plan, at: target)
        } else {
            try StagedTree.build(plan, at: target)
        }
    }

    /// The first argument whose image is in the repository, checked as composefs-rs checks it:
    /// the argument's algorithm must be the repository's, an argument without `?` needs a
    /// repository with fs-verity, and where the kernel can measure the image it must match.
    static func selectImage(_ arguments: [BootArgument], sysroot: String) throws(SetupRootError) -> (NewRoot, BootArgument) {
        let path = sysroot + "/composefs"
        for argument in arguments {
            let repository: Repository
            do throws(RepositoryError) { repository = try Repository(path: path, upgrade: false) } catch {
                throw .repository(path: path, error)
            }
            guard repository.algorithm == argument.id.algorithm else {
                throw .algorithmMismatch(argument: argument.text, repository: path, algorithm: repository.metadata.algorithm)
            }
            if argument.insecure {
                repository.treatAsInsecure()
            } else if !repository.isSecure {
                throw .repositoryWithoutVerity(argument: argument.text, repository: path)
            }
            do throws(RepositoryError) {
                let image = try repository.openImage(argument.id.hex)
                return (.image(image, id: argument.id, repository: repository), argument)
            } catch .imageNotFound {
                continue
            } catch {
                throw .image(argument: argument.text, error)
            }
        }
        throw .noImage(repository: path, tried: arguments.map(\.id.hex))
    }
}

/// What becomes the new root.
enum NewRoot {
    /// An image, open, from `repository` (whose shared lock is held while it is mounted).
    case image(Repository.OpenedImage, id: ObjectID, repository: Repository)
    case directory(String)

    /// The composefs mount's options, as composefs-rs mounts images: read-only, named
    /// `composefs:HEX`, fs-verity required where the kernel vouched for the image.
    static func mountOptions(id: ObjectID, repository: Repository, verified: Bool) -> MountOptions {
        MountOptions(
            basedirs: [repository.path + "/objects"], verity: verified ? .required : .off, readOnly: true,
            source: "composefs:\(id.hex)")
    }
}

/// The deployment's state directory and the parts of it the configuration mounts, opened
/// (O_PATH) before anything is mounted, so a missing one stops the boot cleanly.
struct StateDirectories {
    let etc: FileDescriptor?
    let `var`: FileDescriptor?
    /// For messages: state/deploy/HEX under the sysroot.
    let path: String

    init(sysroot: FileDescriptor, sysrootPath: String, deployment hex: String, config: SetupRootConfig) throws(SetupRootError) {
        let relative = "state/deploy/" + hex
        let path = sysrootPath + "/" + relative
        let state = try openDirectory(relative, in: sysroot, path: path, what: "the deployment's state directory \(path)")
        func part(_ name: String, _ mode: StateMount) throws(SetupRootError) -> FileDescriptor? {
            guard mode == .bind || mode == .overlay else { return nil }
            return try openDirectory(name, in: state, path: path + "/" + name, what: "the deployment's \(name) state directory \(path)/\(name)")
        }
        self.path = path
        etc = try part("etc", config.etc)
        `var` = try part("var", config.var)
    }
}

/// Everything the tree is built from.
struct TreePlan {
    let root: NewRoot
    let sysroot: FileDescriptor
    let sysrootPath: String
    let state: StateDirectories
    let config: SetupRootConfig

    /// The state mounts in the order composefs-rs makes them.
    var stateMounts: [(name: String, mode: StateMount, state: FileDescriptor?)] {
        [("etc", config.etc, state.etc), ("var", config.var, state.var)]
    }
}

/// openat(O_PATH | O_DIRECTORY); `what` names the directory in the error.
func openDirectory(_ name: String, in directory: FileDescriptor, path: String, what: String) throws(SetupRootError) -> FileDescriptor {
    let fd = openat(directory.raw, name, cfs_o_path() | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw .missingDirectory(what: what, SystemError("open", path: path)) }
    return FileDescriptor(owning: fd, path: path)
}

/// mkdir that accepts an existing directory, then the directory opened (O_PATH).
func ensureDirectory(_ name: String, in directory: FileDescriptor, mode: mode_t, what: String) throws(SetupRootError) -> FileDescriptor {
    let path = directory.path + "/" + name
    guard mkdirat(directory.raw, name, mode) == 0 || errno == EEXIST else {
        throw .mount(what: what, .system(SystemError("mkdir", path: path)))
    }
    return try openDirectory(name, in: directory, path: path, what: path)
}
