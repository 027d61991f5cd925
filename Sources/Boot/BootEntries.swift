// The kernels of an image's tree, found where and in the order composefs-rs 0.9 looks
// (`get_boot_resources`, before the boot transform empties /boot):
// 1. Type 1 entries: /boot/loader/entries/*.conf, by name; the files their linux, initrd and efi
//    lines name are looked up from the root of the image;
// 2. Type 2 entries: the *.efi files below /boot/EFI/Linux (UKIs, and *.addon.efi addons),
//    below /boot/loader/addons (global addons), and below each /usr/lib/modules/KVER/;
//    directories are searched depth first, by name;
// 3. /usr/lib/modules/KVER/vmlinuz with KVER/initramfs.img, which become Type 1 entries.
// A missing directory is skipped; anything on the way that is not a directory is an error.

import ComposeFS
import ComposeFSBase

/// A regular file of the image's tree.
public struct BootFile {
    /// Where it is in the image, for messages.
    public let path: String
    public let inode: Inode

    public init(path: String, inode: Inode) {
        self.path = path
        self.inode = inode
    }
}

/// Reads the content of the image's files.
public struct BootFileReader {
    let read: (BootFile) throws(BootError) -> [UInt8]

    public init(_ read: @escaping (BootFile) throws(BootError) -> [UInt8]) { self.read = read }

    public func contents(of file: BootFile) throws(BootError) -> [UInt8] { try read(file) }
}

/// A Boot Loader Specification Type 1 entry and the files it names.
public struct Type1Entry {
    /// Its name in loader/entries.
    public var fileName: [UInt8]
    public var entry: BootLoaderEntry
    /// The files by the path the entry names them with.
    public var files: [String: BootFile]

    public init(fileName: [UInt8], entry: BootLoaderEntry, files: [String: BootFile]) {
        self.fileName = fileName
        self.entry = entry
        self.files = files
    }

    /// Moves the entry's files to /ENTRY-ID/ (keeping their names) and renames it
    /// ENTRY-ID.conf. A path without a '/' stays as it is, as in composefs-rs. Two different
    /// files of one name are an error (composefs-rs kept one of them).
    public mutating func relocate(to entryID: String) throws(BootError) {
        fileName = Array("\(entryID).conf".utf8)
        for index in entry.lines.indices {
            for key in BootLoaderEntry.fileKeys {
                guard let (head, value) = BootLoaderEntry.split(entry.lines[index], key: key),
                    let slash = value.unicodeScalars.lastIndex(of: "/")
                else { continue }
                let relocated = "/\(entryID)/" + String(value.unicodeScalars[value.unicodeScalars.index(after: slash)...])
                entry.lines[index] = head + relocated
                guard let file = files.removeValue(forKey: value) else { continue }
                if let existing = files[relocated], existing.inode !== file.inode {
                    throw .destination(path: relocated, reason: "two different files of the entry (\(existing.path), \(file.path)) would be written here")
                }
                files[relocated] = file
            }
        }
    }
}

/// What a PE file found below the UKI directories is.
public enum PEKind: Equatable, Sendable {
    case uki
    /// An addon of the UKIs beside it (*.addon.efi).
    case addon
    /// An addon of every UKI (below /boot/loader/addons).
    case globalAddon
}

/// A Boot Loader Specification Type 2 entry: a UKI, or an addon.
public struct Type2Entry {
    /// The KVER directory of /usr/lib/modules it was found in.
    public var kernelVersion: [UInt8]?
    /// Where it was, below the directory searched; where it goes below EFI/Linux.
    public var relativePath: [[UInt8]]
    public let file: BootFile
    public let kind: PEKind

    /// Renames it NAME.efi, in the same directory.
    public mutating func rename(_ name: String) {
        relativePath[relativePath.count - 1] = Array("\(name).efi".utf8)
    }
}

/// A kernel in /usr/lib/modules/KVER/ as vmlinuz and, normally, initramfs.img.
public struct ModulesKernel {
    public let kernelVersion: String
    public let vmlinuz: BootFile
    public let initramfs: BootFile?
    /// /usr/lib/os-release, when the image has one.
    public let osRelease: BootFile?

    /// Its Type 1 entry, named ENTRY-ID (default: the kernel version), its files in
    /// /ENTRY-ID/. composefs-rs writes placeholders for the title and version.
    public func type1Entry(entryID: String?) throws(BootError) -> Type1Entry {
        let id = entryID ?? kernelVersion
        guard let initramfs else {
            throw .kernel(version: kernelVersion, reason: "no initramfs.img in /usr/lib/modules/\(kernelVersion)")
        }
        let text = """
            # File created by composefs
            title todoOS
            version 0-todo
            linux /\(id)/vmlinuz
            initrd /\(id)/initramfs.img

            """
        return Type1Entry(
            fileName: Array("\(id).conf".utf8), entry: BootLoaderEntry(text),
            files: ["/\(id)/vmlinuz": vmlinuz, "/\(id)/initramfs.img": initramfs])
    }
}

public enum BootEntry {
    case type1(Type1Entry)
    case type2(Type2Entry)
    case modulesKernel(ModulesKernel)
}

public enum BootResources {
    static let entriesDirectory = "/boot/loader/entries"
    static let ukiDirectory = "/boot/EFI/Linux"
    static let globalAddonDirectory = "/boot/loader/addons"
    static let modulesDirectory = "/usr/lib/modules"
    static let osReleasePath = "/usr/lib/os-release"
    static let entrySuffix = Array(".conf".utf8)
    static let efiSuffix = Array(".efi".utf8)
    static let addonSuffix = Array(".addon.efi".utf8)

    /// Every boot entry of the tree, in composefs-rs's order.
    public static func find(in root: Inode, reader: BootFileReader) throws(BootError) -> [BootEntry] {
        var entries: [BootEntry] = []
        entries += try type1Entries(root, reader: reader).map { .type1($0) }
        entries += try type2Entries(root).map { .type2($0) }
        entries += try modulesKernels(root).map { .modulesKernel($0) }
        return entries
    }

    static func directory(_ root: Inode, _ path: String) throws(BootError) -> Inode? {
        do { return try TreeLookup.directory(root, Array(path.utf8)) } catch { throw .tree(path: path, error) }
    }

    static func type1Entries(_ root: Inode, reader: BootFileReader) throws(BootError) -> [Type1Entry] {
        guard let directory = try directory(root, entriesDirectory) else { return [] }
        var entries: [Type1Entry] = []
        for item in directory.entries where item.name.count >= entrySuffix.count && item.name.suffix(entrySuffix.count).elementsEqual(entrySuffix) {
            let path = entriesDirectory + "/" + displayBytes(item.name)
            guard !item.inode.isDirectory else { throw .entry(path: path, reason: "is a directory") }
            guard item.inode.isRegular else { throw .entry(path: path, reason: "is not a regular file") }
            let bytes = try reader.contents(of: BootFile(path: path, inode: item.inode))
            guard let text = String(validating: bytes, as: UTF8.self) else { throw .entry(path: path, reason: "is not UTF-8") }
            let entry = BootLoaderEntry(text)
            var files: [String: BootFile] = [:]
            for key in BootLoaderEntry.fileKeys {
                for value in entry.values(key) {
                    do {
                        files[value] = BootFile(path: value, inode: try TreeLookup.regularFile(root, Array(value.utf8)))
                    } catch {
                        throw .entry(path: path, reason: "\(key) \(value): \(error)")
                    }
                }
            }
            entries.append(Type1Entry(fileName: item.name, entry: entry, files: files))
        }
        return entries
    }

    static func type2Entries(_ root: Inode) throws(BootError) -> [Type2Entry] {
        var entries: [Type2Entry] = []
        for (path, global) in [(ukiDirectory, false), (globalAddonDirectory, true)] {
            guard let directory = try directory(root, path) else { continue }
            try peFiles(in: directory, at: path, below: [], kernelVersion: nil, global: global, into: &entries)
        }
        guard let modules = try directory(root, modulesDirectory) else { return entries }
        for item in modules.entries where item.inode.isDirectory {
            try peFiles(
                in: item.inode, at: modulesDirectory + "/" + displayBytes(item.name), below: [], kernelVersion: item.name, global: false,
                into: &entries)
        }
        return entries
    }

    /// The *.efi files below `directory` (at `path` in the image), depth first.
    static func peFiles(
        in directory: Inode, at path: String, below relative: [[UInt8]], kernelVersion: [UInt8]?, global: Bool,
        into entries: inout [Type2Entry]
    ) throws(BootError) {
        for item in directory.entries {
            let itemPath = path + "/" + displayBytes(item.name)
            if item.inode.isDirectory {
                try peFiles(
                    in: item.inode, at: itemPath, below: relative + [item.name], kernelVersion: kernelVersion, global: global,
                    into: &entries)
                continue
            }
            guard item.name.count >= efiSuffix.count, item.name.suffix(efiSuffix.count).elementsEqual(efiSuffix) else { continue }
            guard item.inode.isRegular else { throw .uki(path: itemPath, reason: "is not a regular file") }
            let isAddon = item.name.count >= addonSuffix.count && item.name.suffix(addonSuffix.count).elementsEqual(addonSuffix)
            entries.append(
                Type2Entry(
                    kernelVersion: kernelVersion, relativePath: relative + [item.name], file: BootFile(path: itemPath, inode: item.inode),
                    kind: isAddon ? (global ? .globalAddon : .addon) : .uki))
        }
    }

    static func modulesKernels(_ root: Inode) throws(BootError) -> [ModulesKernel] {
        guard let modules = try directory(root, modulesDirectory) else { return [] }
        let osRelease = (try? TreeLookup.regularFile(root, Array(osReleasePath.utf8))).map { BootFile(path: osReleasePath, inode: $0) }
        var kernels: [ModulesKernel] = []
        for item in modules.entries where item.inode.isDirectory {
            let directory = modulesDirectory + "/" + displayBytes(item.name)
            func file(_ name: String) -> BootFile? {
                guard let inode = try? TreeLookup.regularFile(item.inode, Array(name.utf8)) else { return nil }
                return BootFile(path: directory + "/" + name, inode: inode)
            }
            guard let vmlinuz = file("vmlinuz") else { continue }
            guard let version = String(validating: item.name, as: UTF8.self) else {
                throw .kernel(version: displayBytes(item.name), reason: "the name of \(directory) is not UTF-8")
            }
            kernels.append(ModulesKernel(kernelVersion: version, vmlinuz: vmlinuz, initramfs: file("initramfs.img"), osRelease: osRelease))
        }
        return kernels
    }
}
