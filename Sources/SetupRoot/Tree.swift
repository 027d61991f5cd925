// Building the new root's mount tree: the root (the image, or a transient overlay over it),
// the physical root at /sysroot, the state mounts at /etc and /var, then one move onto the
// target. Two ways, with the same result:
// - detached (Linux 6.15 and later): every mount made with fsmount(2)/open_tree(2) and put
//   together while attached nowhere; if anything fails, closing the descriptors drops it all;
// - staged (older kernels): on a private temporary directory with mount(2), removed with
//   one lazy unmount if anything fails.

import CComposeFSSys
import ComposeFSBase
import ComposeFSMount

#if canImport(Glibc)
import Glibc
#endif

/// What each transient (tmpfs-backed) overlay and each state overlay is called in mountinfo, as in composefs-rs.
private let transientSource = "transient"
private let stateOverlaySource = "overlay"

enum DetachedTree {
    /// Whether mounts can be put under a mount attached nowhere, and detached mounts be
    /// overlayfs layers: Linux 6.15 and later. Told by the kernel's version, as trying it costs
    /// more than the whole setup (dropping a detached tree waits for an RCU grace period).
    static func isSupported() -> Bool {
        var names = utsname()
        guard uname(&names) == 0 else { return false }
        return withUnsafeBytes(of: names.release) { isSupported(kernelRelease: $0.prefix { $0 != 0 }) }
    }

    /// "6.15.0-…" and later: the first two runs of digits, read as bytes (Unicode properties
    /// would cost more page faults than the rest of the run).
    static func isSupported(kernelRelease: some Collection<UInt8>) -> Bool {
        let numbers = kernelRelease.split { !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }.prefix(2)
            .map { $0.reduce(0) { $0 &* 10 &+ Int($1 - UInt8(ascii: "0")) } }
        guard numbers.count == 2 else { return false }
        return (numbers[0], numbers[1]) >= (6, 15)
    }

    static func build(_ plan: TreePlan, at target: String) throws(SetupRootError) {
        // State overlays take their lower layer from the image itself: over the transient
        // root they would stack deeper than overlayfs allows.
        let image = try mountRoot(plan.root)
        let root = plan.config.transientRoot ? try transientOverlay(lower: image, what: "the transient overlay on /") : image
        let sysroot = cfs_open_tree_clone(plan.sysroot.raw, "")
        guard sysroot >= 0 else {
            throw .mount(what: "\(plan.sysrootPath) on /sysroot", .system(SystemError("clone the mount of", path: plan.sysrootPath, code: -sysroot)))
        }
        // An image without /sysroot just goes without.
        try attach(FileDescriptor(owning: sysroot, path: plan.sysrootPath), in: root, at: "sysroot", what: "\(plan.sysrootPath) on /sysroot", missingIsFine: true)
        for (name, mode, state) in plan.stateMounts {
            let what = "/\(name) (\(mode.rawValue))"
            switch mode {
            case .none:
                continue
            case .bind:
                guard let state else { continue }
                let clone = cfs_open_tree_clone(state.raw, "")
                guard clone >= 0 else { throw .mount(what: what, .system(SystemError("clone the mount of", path: state.path, code: -clone))) }
                try attach(FileDescriptor(owning: clone, path: state.path), in: root, at: name, what: what)
            case .overlay:
                guard let state else { continue }
                let lower = try openDirectory(name, in: image, path: "/" + name, what: "/\(name) in the image")
                let upper = try ensureDirectory("upper", in: state, mode: 0o755, what: what)
                let work = try ensureDirectory("work", in: state, mode: 0o700, what: what)
                let overlay = try self.overlay(source: stateOverlaySource, lower: lower, upper: upper, work: work, what: what)
                try attach(overlay, in: root, at: name, what: what)
            case .transient:
                let lower = try openDirectory(name, in: image, path: "/" + name, what: "/\(name) in the image")
                try attach(try transientOverlay(lower: lower, what: what), in: root, at: name, what: what)
            }
        }
        let result = cfs_move_mount_onto(root.raw, AT_FDCWD, target)
        guard result == 0 else {
            throw .mount(what: "the new root on \(target)", .system(SystemError("move_mount onto", path: target, code: -result)))
        }
    }

    private static func mountRoot(_ root: NewRoot) throws(SetupRootError) -> FileDescriptor {
        switch root {
        case let .image(image, id, repository):
            let options = NewRoot.mountOptions(id: id, repository: repository, verified: image.verified)
            do throws(MountError) {
                return try ComposefsMount.detachedMount(imageFileDescriptor: image.file.raw, imageName: image.file.path, options: options)
            } catch {
                throw .mount(what: "the composefs image \(id.hex)", error)
            }
        case let .directory(path):
            let clone = cfs_open_tree_clone(AT_FDCWD, path)
            guard clone >= 0 else { throw .rootFSUnopenable(path: path, SystemError("open_tree", path: path, code: -clone)) }
            return FileDescriptor(owning: clone, path: path)
        }
    }

    private static func attach(
        _ mount: FileDescriptor, in root: FileDescriptor, at name: String, what: String, missingIsFine: Bool = false
    ) throws(SetupRootError) {
        let result = cfs_move_mount_onto(mount.raw, root.raw, name)
        guard result == 0 || (missingIsFine && result == -ENOENT) else {
            throw .mount(what: what, .system(SystemError("move_mount onto", path: "/" + name, code: -result)))
        }
    }

    /// An overlay of `lower` with a fresh tmpfs as its writable layer.
    private static func transientOverlay(lower: FileDescriptor, what: String) throws(SetupRootError) -> FileDescriptor {
        let scratch: FileDescriptor
        do throws(MountError) { scratch = try tmpfs() } catch { throw .mount(what: what, error) }
        let upper = try ensureDirectory("upper", in: scratch, mode: 0o755, what: what)
        let work = try ensureDirectory("work", in: scratch, mode: 0o700, what: what)
        return try overlay(source: transientSource, lower: lower, upper: upper, work: work, what: what)
    }

    private static func overlay(
        source: String, lower: FileDescriptor, upper: FileDescriptor, work: FileDescriptor, what: String
    ) throws(SetupRootError) -> FileDescriptor {
        do throws(MountError) {
            guard let context = try FileSystemContext(type: "overlay") else { throw .system(SystemError("fsopen", path: "overlay", code: ENOSYS)) }
            try context.set("source", source)
            try context.set("workdir", fileDescriptor: work.raw, describing: work.path)
            try context.set("upperdir", fileDescriptor: upper.raw, describing: upper.path)
            try context.set("lowerdir+", fileDescriptor: lower.raw, describing: lower.path)
            try context.create(describing: what)
            return try context.mount(readOnly: false)
        } catch {
            throw .mount(what: what, error)
        }
    }

    private static func tmpfs() throws(MountError) -> FileDescriptor {
        guard let context = try FileSystemContext(type: "tmpfs") else { throw .system(SystemError("fsopen", path: "tmpfs", code: ENOSYS)) }
        try context.create(describing: "tmpfs")
        return try context.mount(readOnly: false)
    }
}

enum StagedTree {
    static func build(_ plan: TreePlan, at target: String) throws(SetupRootError) {
        let staging = try Staging()
        defer { staging.remove() }
        let rootPath = try staging.directory("root")
        try mountRoot(plan.root, at: rootPath)
        // Opened before the transient overlay covers it: the state overlays' lower layers.
        let image = try open(rootPath, what: "the new root \(rootPath)")
        if plan.config.transientRoot {
            try transientOverlay(lower: image, at: rootPath, staging: staging, name: "root", what: "the transient overlay on /")
        }
        try bind(proc(plan.sysroot), at: rootPath + "/sysroot", what: "\(plan.sysrootPath) on /sysroot", missingIsFine: true)
        for (name, mode, state) in plan.stateMounts {
            let what = "/\(name) (\(mode.rawValue))"
            let mountpoint = rootPath + "/" + name
            switch mode {
            case .none:
                continue
            case .bind:
                guard let state else { continue }
                try bind(proc(state), at: mountpoint, what: what)
            case .overlay:
                guard let state else { continue }
                let lower = try openDirectory(name, in: image, path: "/" + name, what: "/\(name) in the image")
                let upper = try ensureDirectory("upper", in: state, mode: 0o755, what: what)
                let work = try ensureDirectory("work", in: state, mode: 0o700, what: what)
                try overlay(source: stateOverlaySource, lower: lower, upper: upper, work: work, at: mountpoint, what: what)
            case .transient:
                let lower = try openDirectory(name, in: image, path: "/" + name, what: "/\(name) in the image")
                try transientOverlay(lower: lower, at: mountpoint, staging: staging, name: name, what: what)
            }
        }
        let result = cfs_mount_move(rootPath, target)
        guard result == 0 else {
            throw .mount(what: "the new root on \(target)", .system(SystemError("move mount onto", path: target, code: -result)))
        }
    }

    private static func mountRoot(_ root: NewRoot, at path: String) throws(SetupRootError) {
        switch root {
        case let .image(image, id, repository):
            let options = NewRoot.mountOptions(id: id, repository: repository, verified: image.verified)
            do throws(MountError) {
                try ComposefsMount.mount(imageFileDescriptor: image.file.raw, imageName: image.file.path, at: path, options: options)
            } catch {
                throw .mount(what: "the composefs image \(id.hex)", error)
            }
        case let .directory(directory):
            let result = cfs_mount_bind(directory, path)
            guard result == 0 else { throw .rootFSUnopenable(path: directory, SystemError("bind mount", path: directory, code: -result)) }
        }
    }

    private static func bind(_ source: String, at mountpoint: String, what: String, missingIsFine: Bool = false) throws(SetupRootError) {
        let result = cfs_mount_bind(source, mountpoint)
        guard result == 0 || (missingIsFine && result == -ENOENT) else {
            throw .mount(what: what, .system(SystemError("bind mount onto", path: mountpoint, code: -result)))
        }
    }

    private static func transientOverlay(
        lower: FileDescriptor, at mountpoint: String, staging: Staging, name: String, what: String
    ) throws(SetupRootError) {
        let scratchPath = try staging.directory("transient-" + name)
        let result = cfs_mount_legacy("tmpfs", scratchPath, "tmpfs", 0, 0, nil)
        guard result == 0 else { throw .mount(what: what, .system(SystemError("mount tmpfs on", path: scratchPath, code: -result))) }
        let scratch = try open(scratchPath, what: scratchPath)
        let upper = try ensureDirectory("upper", in: scratch, mode: 0o755, what: what)
        let work = try ensureDirectory("work", in: scratch, mode: 0o700, what: what)
        try overlay(source: transientSource, lower: lower, upper: upper, work: work, at: mountpoint, what: what)
    }

    /// overlayfs through mount(2), each layer named by its descriptor so no path needs escaping.
    private static func overlay(
        source: String, lower: FileDescriptor, upper: FileDescriptor, work: FileDescriptor, at mountpoint: String, what: String
    ) throws(SetupRootError) {
        let data = "lowerdir=\(proc(lower)),upperdir=\(proc(upper)),workdir=\(proc(work))"
        let result = cfs_mount_legacy(source, mountpoint, "overlay", 0, 0, data)
        guard result == 0 else { throw .mount(what: what, .system(SystemError("mount overlay on", path: mountpoint, code: -result))) }
    }

    private static func open(_ path: String, what: String) throws(SetupRootError) -> FileDescriptor {
        let fd = Glibc.open(path, cfs_o_path() | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .missingDirectory(what: what, SystemError("open", path: path)) }
        return FileDescriptor(owning: fd, path: path)
    }

    private static func proc(_ directory: FileDescriptor) -> String { "/proc/self/fd/\(directory.raw)" }
}

/// A temporary directory made a private mount (a mount whose parent is shared, as / is under
/// systemd, cannot be moved), holding the tree while it is built. Removing it unmounts
/// whatever is still below it.
private struct Staging {
    let path: String

    init() throws(SetupRootError) {
        var made: String?
        for parent in ["/run", "/tmp"] {
            var template = Array("\(parent)/composefs-setup-root.XXXXXX".utf8CString)
            if mkdtemp(&template) != nil {
                made = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
                break
            }
        }
        guard let made else { throw .mount(what: "a staging directory", .system(SystemError("mkdtemp", path: "/run and /tmp"))) }
        path = made
        var result = cfs_mount_bind(path, path)
        if result == 0 { result = cfs_mount_make_private(path) }
        guard result == 0 else {
            remove()
            throw .mount(what: "a staging directory", .system(SystemError("make a private mount of", path: path, code: -result)))
        }
    }

    /// A new directory below the staging directory.
    func directory(_ name: String) throws(SetupRootError) -> String {
        let directory = path + "/" + name
        guard mkdir(directory, 0o700) == 0 else { throw .mount(what: "a staging directory", .system(SystemError("mkdir", path: directory))) }
        return directory
    }

    func remove() {
        _ = cfs_umount(path, 1)
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name != "." && name != ".." { rmdir(path + "/" + name) }
            }
            closedir(directory)
        }
        rmdir(path)
    }
}
