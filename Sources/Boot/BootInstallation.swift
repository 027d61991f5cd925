// Writing a boot entry to a boot directory as composefs-rs 0.9's `write_boot_simple` does:
// - a Type 1 entry (and a /usr/lib/modules kernel, made one): with an entry id, its files are
//   moved to /ENTRY-ID/ and it is named ENTRY-ID.conf; the composefs argument and the
//   `--cmdline` arguments go on its options line; its files are written at the paths it names
//   (relative to the boot directory), then loader/entries/NAME.conf;
// - a UKI: copied byte for byte to EFI/Linux/ (its path below the directory it was found in
//   kept; renamed ENTRY-ID.efi with an entry id); no `--cmdline` arguments can be added, and its
//   own .cmdline must name this image (its `composefs.digest=` of the repository's algorithm,
//   else its first `composefs=`), or it is refused.
// Directories are made 0777 and files 0666, less the umask, as Rust's std::fs makes them.
// Unlike 0.9, everything is checked before anything is written, and each file is written
// beside its place and renamed there once all are complete, so a failure leaves nothing behind
// (0.9 left EFI/Linux behind when it refused a UKI, and overwrote files in place).

import CComposeFSSys
import ComposeFS
import ComposeFSBase

#if canImport(Glibc)
import Glibc
#endif

/// `prepare-boot`'s `--bootdir`, `--entry-id` and `--cmdline`.
public struct BootInstallOptions {
    public var bootDirectory: String
    public var entryID: String?
    /// The parameters of every `--cmdline` value, in order.
    public var extraParameters: [KernelCommandLine.Parameter]

    public init(bootDirectory: String, entryID: String?, commandLine: [String]) throws(BootError) {
        if let entryID {
            let bytes = Array(entryID.utf8)
            guard !bytes.isEmpty, entryID != ".", entryID != ".." else {
                throw .invalidEntryID(entryID, reason: "it must name a file")
            }
            guard !bytes.contains(where: { $0 == UInt8(ascii: "/") || $0 < 0x20 || $0 == 0x7F }) else {
                throw .invalidEntryID(entryID, reason: "it names a directory and a file; no '/' or control characters")
            }
        }
        var parameters: [KernelCommandLine.Parameter] = []
        for value in commandLine {
            let (found, initArguments) = KernelCommandLine.locate(Array(value.utf8))
            guard initArguments == nil else { throw .invalidArgument(value, reason: "'--' (arguments for init) cannot be added") }
            guard !found.isEmpty else { throw .invalidArgument(value, reason: "it is empty") }
            parameters += found.map(\.parameter)
        }
        self.bootDirectory = bootDirectory
        self.entryID = entryID
        self.extraParameters = parameters
    }
}

/// What writing one boot entry puts in the boot directory, in the order it is written (the
/// files an entry names before the entry).
public struct BootInstallation {
    public enum Content {
        case bytes([UInt8])
        case file(BootFile)
    }

    public struct Item {
        /// Below the boot directory.
        public var path: [[UInt8]]
        public var content: Content
    }

    public var items: [Item]

    static let entriesDirectory = [Array("loader".utf8), Array("entries".utf8)]
    static let ukiDirectory = [Array("EFI".utf8), Array("Linux".utf8)]

    /// Checks `entry` and lays out its files, for the image `argument` boots.
    public init(_ entry: BootEntry, argument: BootArgument, options: BootInstallOptions, reader: BootFileReader) throws(BootError) {
        switch entry {
        case var .type1(type1):
            if let id = options.entryID { try type1.relocate(to: id) }
            items = try Self.items(type1, argument: argument, options: options)
        case let .modulesKernel(kernel):
            var type1 = try kernel.type1Entry(entryID: options.entryID)
            if let id = options.entryID { try type1.relocate(to: id) }
            items = try Self.items(type1, argument: argument, options: options)
        case var .type2(type2):
            if let id = options.entryID { type2.rename(id) }
            guard options.extraParameters.isEmpty else {
                throw .uki(path: type2.file.path, reason: "--cmdline arguments cannot be added to a UKI")
            }
            let bytes = try reader.contents(of: type2.file)
            try Self.check(uki: bytes, path: type2.file.path, boots: argument)
            items = [Item(path: Self.ukiDirectory + type2.relativePath, content: .bytes(bytes))]
        }
    }

    private static func items(_ type1: Type1Entry, argument: BootArgument, options: BootInstallOptions) throws(BootError) -> [Item] {
        var entry = type1.entry
        entry.setBootArgument(argument)
        for parameter in options.extraParameters { entry.addParameter(parameter) }
        // An unclosed quote before it would make the argument part of another parameter.
        guard entry.commandLine.contains(where: { $0.raw == argument.text }) else {
            throw .entry(
                path: "loader/entries/" + displayBytes(type1.fileName),
                reason: "the composefs argument would not be a parameter of its own on the options line (an unclosed '\"'?)")
        }
        var items: [Item] = []
        // Paths written differently may name one file (`//boot/./x` is `/boot/x`).
        var destinations = Set<[[UInt8]]>()
        for (path, file) in type1.files.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            let destination = try relativePath(path)
            if destinations.insert(destination).inserted { items.append(Item(path: destination, content: .file(file))) }
        }
        items.append(Item(path: entriesDirectory + [type1.fileName], content: .bytes(Array(entry.text.utf8))))
        return items
    }

    /// Where a file an entry names goes below the boot directory.
    private static func relativePath(_ path: String) throws(BootError) -> [[UInt8]] {
        let bytes = Array(path.utf8)
        guard bytes.first == UInt8(ascii: "/") else { throw .destination(path: path, reason: "not an absolute path") }
        guard bytes.last != UInt8(ascii: "/") else { throw .destination(path: path, reason: "names a directory, not a file") }
        var components: [[UInt8]] = []
        for part in bytes.split(separator: UInt8(ascii: "/")) where !part.elementsEqual([0x2E]) {
            guard !part.elementsEqual([0x2E, 0x2E]) else { throw .destination(path: path, reason: "a '..' component leaves the boot directory") }
            components.append(Array(part))
        }
        return components
    }

    /// The UKI's .cmdline must name the image `argument` boots.
    static func check(uki bytes: [UInt8], path: String, boots argument: BootArgument) throws(BootError) {
        let commandLine: String
        do { commandLine = try UKI(bytes).commandLine() } catch { throw .uki(path: path, reason: error.description) }
        var named: BootArgument?
        var legacy: BootArgument?
        for parameter in KernelCommandLine.parameters(commandLine) {
            let found: BootArgument?
            do { found = try BootArgument(key: parameter.key, value: parameter.value) } catch {
                throw .uki(path: path, reason: "its .cmdline: \(error)")
            }
            guard let found else { continue }
            if parameter.key == BootArgument.digestKey {
                if found.id.algorithm == argument.id.algorithm {
                    named = found
                    break
                }
            } else if legacy == nil {
                legacy = found
            }
        }
        guard let found = named ?? legacy else {
            throw .uki(path: path, reason: "its .cmdline has no composefs= or composefs.digest= argument: \"\(commandLine)\"")
        }
        guard found.id == argument.id else {
            throw .uki(
                path: path, reason: "its .cmdline names the composefs image \(found.id.prefixedHex), not this one (\(argument.id.prefixedHex))")
        }
    }

    /// Writes the items below `directory` (made if missing); on failure nothing new is left.
    public func write(into directory: String, reader: BootFileReader) throws(BootError) {
        var created: [[UInt8]] = []
        var staged: [(temporary: [UInt8], destination: [UInt8])] = []
        var renamed = 0
        do throws(BootError) {
            let base = Array(directory.utf8)
            try makeDirectories(base, created: &created)
            for item in items {
                var parent = base
                for component in item.path.dropLast() {
                    parent += [UInt8(ascii: "/")] + component
                    try makeDirectories(parent, created: &created)
                }
                let destination = parent + [UInt8(ascii: "/")] + (item.path.last ?? [])
                let bytes: [UInt8]
                switch item.content {
                case let .bytes(content): bytes = content
                case let .file(file): bytes = try reader.contents(of: file)
                }
                staged.append((try writeTemporary(bytes, beside: destination, in: parent, name: item.path.last ?? []), destination))
            }
            for (temporary, destination) in staged {
                guard callWithPath(temporary, { from in callWithPath(destination) { rename(from, $0) } }) == 0 else {
                    throw .system(SystemError("rename into place", path: displayBytes(destination)))
                }
                renamed += 1
            }
            // The entries must be on disk before the boot loader can read them.
            for parent in Set(staged.map { Array($0.destination.reversed().drop { $0 != UInt8(ascii: "/") }.dropFirst().reversed()) }) {
                try syncDirectory(parent)
            }
        } catch {
            for (temporary, _) in staged.dropFirst(renamed) { _ = callWithPath(temporary) { unlink($0) } }
            if renamed == 0 { for path in created.reversed() { _ = callWithPath(path) { rmdir($0) } } }
            throw error
        }
    }

    /// Writes `bytes` to a new file in `parent` (made 0666 less the umask) and syncs it.
    private func writeTemporary(_ bytes: [UInt8], beside destination: [UInt8], in parent: [UInt8], name: [UInt8]) throws(BootError) -> [UInt8] {
        var attempt = 0
        while true {
            let temporary = parent + Array("/.\(displayBytes(name)).\(getpid()).\(attempt).tmp".utf8)
            let fd = callWithPath(temporary) { open($0, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666) }
            if fd < 0 && errno == EEXIST {
                attempt += 1
                continue
            }
            guard fd >= 0 else { throw .system(SystemError("create", path: displayBytes(destination))) }
            let file = FileDescriptor(owning: fd, path: displayBytes(destination))
            do throws(SystemError) {
                try file.write(bytes)
                try file.sync()
            } catch {
                _ = callWithPath(temporary) { unlink($0) }
                throw .system(error)
            }
            return temporary
        }
    }
}

/// mkdir -p: makes `path` and its missing parents (0777 less the umask), listing those it made.
func makeDirectories(_ path: [UInt8], created: inout [[UInt8]]) throws(BootError) {
    var prefix: [UInt8] = path.first == UInt8(ascii: "/") ? [UInt8(ascii: "/")] : []
    for component in path.split(separator: UInt8(ascii: "/")) {
        if !prefix.isEmpty && prefix.last != UInt8(ascii: "/") { prefix.append(UInt8(ascii: "/")) }
        prefix += component
        if callWithPath(prefix, { mkdir($0, 0o777) }) == 0 {
            created.append(prefix)
            continue
        }
        let code = errno
        var info = stat()
        guard code == EEXIST, callWithPath(prefix, { stat($0, &info) }) == 0 else {
            throw .system(SystemError("create directory", path: displayBytes(prefix), code: code))
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else {
            throw .destination(path: displayBytes(prefix), reason: "exists and is not a directory")
        }
    }
}

func syncDirectory(_ path: [UInt8]) throws(BootError) {
    let fd = callWithPath(path) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    guard fd >= 0 else { throw .system(SystemError("open", path: displayBytes(path))) }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw .system(SystemError("fsync", path: displayBytes(path))) }
}

/// Calls `body` with `path` as a C string.
func callWithPath<R>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
    (path.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer { body($0.baseAddress!) }
}
