// Mounting a composefs image: the EROFS image as overlayfs's metadata layer, the object
// stores as data-only layers. With a kernel of 6.15 or later nothing but the final mount
// is ever attached to the file system tree: the EROFS mount stays detached and is handed to
// overlayfs as a file descriptor.

import CComposeFSSys
import ComposeFSBase
import EROFS
import FsVerity

#if canImport(Glibc)
import Glibc
#endif

public enum ComposefsMount {
    /// Mounts the image at `path` on `mountpoint`.
    public static func mount(image path: String, at mountpoint: String, options: MountOptions) throws(MountError) {
        try mount(image: path, at: mountpoint, options: options, mechanisms: Mechanism.allCases)
    }

    /// Mounts an image already open as `imageFileDescriptor` (the caller keeps ownership);
    /// `imageName` names it in errors.
    public static func mount(
        imageFileDescriptor: Int32, imageName: String, at mountpoint: String, options: MountOptions
    ) throws(MountError) {
        try options.validate()
        let mounter = Mounter(
            imageName: imageName, image: imageFileDescriptor, mountpoint: mountpoint, options: options,
            mechanisms: Mechanism.allCases, forceLoopDevice: false)
        _ = try mounter.run()
    }

    /// Mounts an image already open as `imageFileDescriptor` (the caller keeps ownership) but
    /// attaches it nowhere: the overlayfs mount comes back as a descriptor for move_mount(2).
    /// Needs the new mount API; fails as mount(2) would on kernels without it.
    public static func detachedMount(
        imageFileDescriptor: Int32, imageName: String, options: MountOptions
    ) throws(MountError) -> FileDescriptor {
        try options.validate()
        let mounter = Mounter(
            imageName: imageName, image: imageFileDescriptor, mountpoint: nil, options: options,
            mechanisms: [.detachedLayer, .temporaryMount], forceLoopDevice: false)
        guard let mount = try mounter.run() else { throw .system(SystemError("fsopen", path: "overlay", code: ENOSYS)) }
        return mount
    }

    /// The ways of putting the image under overlayfs, newest kernel interface first.
    enum Mechanism: CaseIterable {
        /// The detached EROFS mount passed to overlayfs as `lowerdir+` by file descriptor (6.15+).
        case detachedLayer
        /// The EROFS mount attached to a private temporary directory only while overlayfs is
        /// set up, then detached again (kernels with `lowerdir+` but without detached layers).
        case temporaryMount
        /// mount(2) with a `lowerdir=IMAGE::DATA` option string (kernels without the new API).
        case legacyOptions
    }

    /// As `mount(image:at:options:)`, limited to some mechanisms (tests use this to exercise
    /// the fallbacks on a kernel that does not need them).
    static func mount(
        image path: String, at mountpoint: String, options: MountOptions, mechanisms: [Mechanism],
        forceLoopDevice: Bool = false
    ) throws(MountError) {
        try options.validate()
        let image = try openFile(path, O_RDONLY)
        defer { withExtendedLifetime(image) {} }
        let mounter = Mounter(
            imageName: path, image: image.raw, mountpoint: mountpoint, options: options,
            mechanisms: mechanisms, forceLoopDevice: forceLoopDevice)
        _ = try mounter.run()
    }
}

private struct Mounter {
    let imageName: String
    let image: Int32
    /// Where the mount goes; nil leaves it detached, for the caller to attach.
    let mountpoint: String?
    let options: MountOptions
    let mechanisms: [ComposefsMount.Mechanism]
    let forceLoopDevice: Bool

    /// Mounts the image; without a mountpoint, returns the detached mount.
    func run() throws(MountError) -> FileDescriptor? {
        try checkImageDigest()
        let header = try readHeader()
        let verity = try verityEnforced()
        let userNamespace = try options.idmapUserNamespace.map { path throws(MountError) in
            try openFile(path, O_RDONLY | O_NOCTTY)
        }
        defer { withExtendedLifetime(userNamespace) {} }
        let hasACL = header.flags & ComposefsHeader.flagHasACL != 0

        var firstError: MountError?
        for mechanism in mechanisms {
            do throws(MountError) {
                switch mechanism {
                case .detachedLayer:
                    guard let erofs = try detachedErofs(hasACL: hasACL, userNamespace: userNamespace) else { continue }
                    return try attach(try overlay(lower: .detachedMount(erofs), verity: verity))
                case .temporaryMount:
                    guard let erofs = try detachedErofs(hasACL: hasACL, userNamespace: userNamespace) else { continue }
                    let attached = try TemporaryMount(attaching: erofs)
                    defer { attached.remove() }
                    return try attach(try overlay(lower: .path(attached.path), verity: verity))
                case .legacyOptions:
                    guard userNamespace == nil else {
                        throw .invalidOptions("idmap needs the new mount API, which this kernel lacks")
                    }
                    guard let mountpoint else { continue }
                    let attached = try legacyErofs(hasACL: hasACL)
                    defer { attached.remove() }
                    try legacyOverlay(lower: attached.path, at: mountpoint, verity: verity)
                    return nil
                }
            } catch .system(let error, let message) where Self.meansUnsupported(error.code) {
                // An older kernel: try the next mechanism, but report what the newest one said.
                firstError = firstError ?? .system(error, kernelMessage: message)
            }
        }
        throw firstError ?? .system(SystemError("fsopen", path: "overlay", code: ENOSYS))
    }

    /// Errors by which a kernel turns down an interface it does not have (rather than the
    /// paths or options given), so an older mechanism may still work.
    static func meansUnsupported(_ code: Int32) -> Bool {
        [ENOSYS, EINVAL, EBADF, EOPNOTSUPP].contains(code)
    }

    // MARK: Checks before mounting

    /// With `digest=`, the kernel's fs-verity measurement of the image must match. A digest
    /// computed here instead would prove nothing about what the kernel reads later.
    private func checkImageDigest() throws(MountError) {
        guard let hex = options.expectedDigest else { return }
        let expected = try MountOptions.decodeDigest(hex)
        let measured: ObjectID
        do {
            measured = try FsVerity.measure(fileDescriptor: image)
        } catch .notEnabled, .notSupported {
            throw .imageHasNoVerity(image: imageName)
        } catch .wrongAlgorithm, .unknownAlgorithm {
            throw .imageDigestMismatch(image: imageName, expected: hex, actual: "(another algorithm)")
        } catch let .io(code) {
            throw .system(SystemError("measure fs-verity of", path: imageName, code: code))
        } catch {
            throw .imageHasNoVerity(image: imageName)
        }
        guard measured == expected else {
            throw .imageDigestMismatch(image: imageName, expected: hex, actual: measured.hex)
        }
    }

    private func readHeader() throws(MountError) -> ComposefsHeader {
        var bytes = [UInt8](repeating: 0, count: ComposefsHeader.size)
        let count = bytes.withUnsafeMutableBytes { pread(image, $0.baseAddress, $0.count, 0) }
        guard count >= 0 else { throw .system(SystemError("read", path: imageName)) }
        guard count == bytes.count,
            let header = bytes.withUnsafeBytes({ try? ComposefsHeader(decoding: ByteReader($0)) }),
            header.magic == ComposefsHeader.magic
        else { throw .notComposefsImage(image: imageName) }
        return header
    }

    /// Whether to ask overlayfs for `verity=require`. overlayfs accepts the option even where
    /// no file can have fs-verity and then fails every read, so look at the object stores first.
    private func verityEnforced() throws(MountError) -> Bool {
        guard options.verity != .off else { return false }
        for basedir in options.basedirs {
            let directory = try openFile(basedir, O_RDONLY | O_DIRECTORY)
            defer { withExtendedLifetime(directory) {} }
            do {
                _ = try FsVerity.measure(fileDescriptor: directory.raw)
            } catch .notSupported {
                if options.verity == .required { throw .verityNotEnforceable(basedir: basedir) }
                return false
            } catch {
                // ENODATA (a directory has no verity) and the like: the file system knows fs-verity.
            }
        }
        return true
    }

    // MARK: EROFS

    /// The image mounted read-only but attached nowhere; nil when the kernel lacks the new
    /// mount API. Images go in directly where EROFS can use a file, else through a loop device.
    private func detachedErofs(
        hasACL: Bool, userNamespace: FileDescriptor?
    ) throws(MountError) -> FileDescriptor? {
        if !forceLoopDevice {
            do throws(MountError) {
                return try detachedErofs(source: "/proc/self/fd/\(image)", hasACL: hasACL, userNamespace: userNamespace)
            } catch .system(let error, _) where error.code == ENOTBLK {
                // This kernel's EROFS mounts block devices only.
            }
        }
        // Once the EROFS superblock holds the device, autoclear releases it at unmount.
        let loop = try LoopDevice(backing: image, name: imageName)
        defer { withExtendedLifetime(loop) {} }
        return try detachedErofs(source: loop.path, hasACL: hasACL, userNamespace: userNamespace)
    }

    private func detachedErofs(
        source: String, hasACL: Bool, userNamespace: FileDescriptor?
    ) throws(MountError) -> FileDescriptor? {
        guard let context = try FileSystemContext(type: "erofs") else { return nil }
        try context.set("source", source)
        try context.setFlag("ro")
        if !hasACL { try context.setFlag("noacl") }
        try context.create(describing: imageName)
        let mount = try context.mount(readOnly: true)
        defer { withExtendedLifetime(mount) {} }
        if let userNamespace {
            let result = cfs_mount_set_idmap(mount.raw, userNamespace.raw)
            guard result == 0 else {
                throw .system(SystemError("idmap mount of", path: options.idmapUserNamespace ?? "", code: -result))
            }
        }
        return mount
    }

    /// The image mounted with mount(2) on a temporary directory (kernels without fsopen).
    private func legacyErofs(hasACL: Bool) throws(MountError) -> TemporaryMount {
        let directory = try TemporaryMount.makeDirectory()
        func attach(_ source: String) -> Int32 {
            cfs_mount_legacy(source, directory, "erofs", 1, 0, hasACL ? nil : "noacl")
        }
        var result = forceLoopDevice ? -ENOTBLK : attach("/proc/self/fd/\(image)")
        var loop: LoopDevice?
        defer { withExtendedLifetime(loop) {} }
        if result == -ENOTBLK {
            do throws(MountError) {
                loop = try LoopDevice(backing: image, name: imageName)
            } catch {
                rmdir(directory)
                throw error
            }
            result = attach(loop?.path ?? "")
        }
        guard result == 0 else {
            rmdir(directory)
            throw .system(SystemError("mount erofs", path: imageName, code: -result))
        }
        return TemporaryMount(path: directory)
    }

    // MARK: overlayfs

    private enum Layer {
        case detachedMount(FileDescriptor)
        case path(String)
    }

    /// Moves a detached mount onto the mountpoint; without one, hands it back.
    private func attach(_ mount: FileDescriptor) throws(MountError) -> FileDescriptor? {
        guard let mountpoint else { return mount }
        let result = cfs_move_mount_to(mount.raw, mountpoint)
        guard result == 0 else { throw .system(SystemError("mount on", path: mountpoint, code: -result)) }
        return nil
    }

    /// The detached overlayfs mount of the image's EROFS `lower` and the object stores.
    private func overlay(lower: Layer, verity: Bool) throws(MountError) -> FileDescriptor {
        guard let context = try FileSystemContext(type: "overlay") else {
            throw .system(SystemError("fsopen", path: "overlay", code: ENOSYS))
        }
        // A kernel that parses overlayfs options the legacy way accepts anything here and
        // would ignore the per-layer options below.
        guard !context.accepts("unsupported", "unsupported") else {
            throw .system(SystemError("fsconfig", path: "overlay", code: ENOSYS))
        }
        try context.set("source", options.source)
        try context.set("metacopy", "on")
        try context.set("redirect_dir", "on")
        if verity { try context.set("verity", "require") }
        switch lower {
        case let .detachedMount(mount): try context.set("lowerdir+", fileDescriptor: mount.raw, describing: imageName)
        case let .path(path): try context.set("lowerdir+", path)
        }
        for basedir in options.basedirs {
            try context.set("datadir+", basedir)
        }
        if let upperdir = options.upperdir, let workdir = options.workdir {
            try context.set("upperdir", upperdir)
            try context.set("workdir", workdir)
        }
        try context.create(describing: mountpoint ?? imageName)
        return try context.mount(readOnly: options.readOnly)
    }

    /// mount(2) with an option string. Data-only layers (`::`) came in Linux 6.5; older
    /// kernels get the object stores as ordinary lower layers, as the reference tools do.
    private func legacyOverlay(lower: String, at mountpoint: String, verity: Bool) throws(MountError) {
        func escape(_ path: String) -> String {
            path.replacingAll(",", with: "\\,")
        }
        var upper = ""
        if let upperdir = options.upperdir, let workdir = options.workdir {
            upper = ",upperdir=\(escape(upperdir)),workdir=\(escape(workdir))"
        }
        var result: Int32 = 0
        for separator in ["::", ":"] {
            let lowerdirs = ([lower] + options.basedirs).map(escape).joined(separator: separator)
            let data = "metacopy=on,redirect_dir=on,lowerdir=\(lowerdirs)\(upper)\(verity ? ",verity=require" : "")"
            result = cfs_mount_legacy(options.source, mountpoint, "overlay", options.readOnly ? 1 : 0, separator == "::" ? 1 : 0, data)
            if result != -EINVAL { break }
        }
        guard result == 0 else { throw .system(SystemError("mount overlay on", path: mountpoint, code: -result)) }
    }
}

// MARK: Resources that clean up after themselves

/// open(2), failing as a mount error.
private func openFile(_ path: String, _ flags: Int32) throws(MountError) -> FileDescriptor {
    do { return try FileDescriptor.open(path, flags) } catch { throw .system(error) }
}

/// A file system context from fsopen(2). Failures carry the messages the kernel logged to it.
package struct FileSystemContext {
    let fd: FileDescriptor
    let type: String

    /// nil when the kernel has no fsopen(2).
    package init?(type: String) throws(MountError) {
        let result = cfs_fsopen(type)
        if result == -ENOSYS { return nil }
        guard result >= 0 else { throw .system(SystemError("fsopen", path: type, code: -result)) }
        self.fd = FileDescriptor(owning: result, path: type)
        self.type = type
    }

    package func set(_ key: String, _ value: String) throws(MountError) {
        try check(cfs_fsconfig_set_string(fd.raw, key, value), "set \(type) option \(key) to", value)
    }

    package func set(_ key: String, fileDescriptor: Int32, describing name: String) throws(MountError) {
        try check(cfs_fsconfig_set_fd(fd.raw, key, fileDescriptor), "set \(type) option \(key) to", name)
    }

    package func setFlag(_ key: String) throws(MountError) {
        try check(cfs_fsconfig_set_flag(fd.raw, key), "set \(type) flag", key)
    }

    func accepts(_ key: String, _ value: String) -> Bool {
        let accepted = cfs_fsconfig_set_string(fd.raw, key, value) == 0
        _ = kernelMessages()
        return accepted
    }

    package func create(describing name: String) throws(MountError) {
        try check(cfs_fsconfig_create(fd.raw), "create \(type) file system for", name)
    }

    package func mount(readOnly: Bool) throws(MountError) -> FileDescriptor {
        let result = cfs_fsmount(fd.raw, readOnly ? 1 : 0)
        try check(result, "fsmount \(type) for", "")
        return FileDescriptor(owning: result, path: type)
    }

    private func check(_ result: Int32, _ operation: String, _ path: String) throws(MountError) {
        guard result < 0 else { return }
        throw .system(SystemError(operation, path: path, code: -result), kernelMessage: kernelMessages())
    }

    /// Drains the context's log ("e overlayfs: ..." lines), joined into one line.
    private func kernelMessages() -> String {
        var lines: [String] = []
        var buffer = [UInt8](repeating: 0, count: 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd.raw, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            var line = Substring(String(decoding: buffer[..<count], as: UTF8.self))
            if line.hasPrefix("e ") || line.hasPrefix("w ") || line.hasPrefix("i ") { line = line.dropFirst(2) }
            lines.append(String(line.trimmingSuffixNewlines()))
        }
        return lines.joined(separator: "; ")
    }
}

/// A read-only loop device over an open file, released by the kernel when its last user
/// (the open descriptor here, then the EROFS superblock) goes.
private struct LoopDevice {
    let device: FileDescriptor
    let path: String

    init(backing fd: Int32, name: String) throws(MountError) {
        var pathBuffer = [CChar](repeating: 0, count: 64)
        let result = cfs_loop_attach(fd, name, &pathBuffer, pathBuffer.count)
        guard result >= 0 else { throw .system(SystemError("set up loop device for", path: name, code: -result)) }
        device = FileDescriptor(owning: result, path: name)
        path = String(decoding: pathBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A mount on a private temporary directory, for kernels that cannot use detached mounts.
private struct TemporaryMount {
    let path: String

    static func makeDirectory() throws(MountError) -> String {
        var template = Array("/tmp/.composefs.XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else {
            throw .system(SystemError("create temporary directory", path: "/tmp"))
        }
        return String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    init(path: String) { self.path = path }

    init(attaching mount: FileDescriptor) throws(MountError) {
        defer { withExtendedLifetime(mount) {} }
        path = try Self.makeDirectory()
        let result = cfs_move_mount_to(mount.raw, path)
        guard result == 0 else {
            rmdir(path)
            throw .system(SystemError("mount erofs on", path: path, code: -result))
        }
    }

    /// Detaches the mount (overlayfs keeps its own reference) and removes the directory.
    func remove() {
        _ = cfs_umount(path, 1)
        rmdir(path)
    }
}

extension String {
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var result = ""
        for character in self {
            if character == target { result += replacement } else { result.append(character) }
        }
        return result
    }
}

extension Substring {
    fileprivate func trimmingSuffixNewlines() -> Substring {
        var result = self
        while result.last == "\n" || result.last == "\0" { result = result.dropLast() }
        return result
    }
}
