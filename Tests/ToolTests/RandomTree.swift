// Seeded random directory trees for round-trip tests (image → mount → compare), in the
// spirit of the reference's tests/gendir: every kind of file composefs stores, sizes on
// both sides of the inline limit and of block boundaries, directories large enough to
// span several directory blocks, xattrs, hard links, odd names, and assorted modes,
// owners and timestamps. The same seed and options always give the same tree.
//
// Without root only what an unprivileged user can create is made (no devices,
// whiteouts, other owners or trusted.* xattrs); `Options.privileged` says which.

import CComposeFSSys
import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

struct RandomTree {
    struct Options {
        /// Directories besides the root.
        var directories: ClosedRange<Int> = 12...24
        /// Deepest nesting below the root.
        var maxDepth = 5
        /// Non-directory entries per directory.
        var entriesPerDirectory: ClosedRange<Int> = 0...14
        /// Chance that a directory gets `largeDirectoryEntries` entries instead
        /// (several EROFS directory blocks).
        var largeDirectoryChance = 0.04
        var largeDirectoryEntries: ClosedRange<Int> = 150...400
        /// Chance that a regular file is large (up to `largeFileMaxSize` bytes).
        var largeFileChance = 0.03
        var largeFileMaxSize = 1 << 20
        /// Devices, whiteouts, other owners and trusted.* xattrs (needs root).
        var privileged = geteuid() == 0
        /// Character devices 0:0 (overlay whiteouts), when privileged.
        var whiteouts = true
        var hardlinks = true
        /// user.* xattrs (and trusted.* when privileged); skipped by itself where the
        /// file system refuses them.
        var xattrs = true
        /// Random timestamps (with nanoseconds) on everything; otherwise the times of creation.
        var randomTimes = true

        init() {}
    }

    /// What was made.
    struct Summary: CustomStringConvertible {
        var seed: UInt64 = 0
        var directories = 0
        var regularFiles = 0
        var inlineFiles = 0
        var backedFiles = 0
        var symlinks = 0
        var hardlinks = 0
        var fifos = 0
        var devices = 0
        var whiteouts = 0
        var xattrs = 0
        var bytes = 0

        var description: String {
            "seed \(seed): \(directories) dirs, \(regularFiles) files (\(inlineFiles) ≤64 B, \(backedFiles) larger, "
                + "\(bytes) B), \(symlinks) symlinks, \(hardlinks) hard links, \(fifos) fifos, \(devices) devices, "
                + "\(whiteouts) whiteouts, \(xattrs) xattrs"
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Creates the tree at `root` (which must not exist yet).
    @discardableResult
    static func generate(at root: String, seed: UInt64, options: Options = Options()) throws -> Summary {
        var generator = RandomTree(root: root, seed: seed, options: options)
        try generator.run()
        return generator.summary
    }

    // MARK: State

    private var random: SplitMix64
    private let root: String
    private let options: Options
    private var summary = Summary()
    private var xattrsWork = true
    /// Directories (relative paths, "" is the root) with their depth.
    private var directories: [(path: String, depth: Int)] = [("", 0)]
    /// Regular files made so far, for hard links and reused contents.
    private var regularFiles: [String] = []
    private var contents: [[UInt8]] = []
    /// Everything made, for the final pass that sets times.
    private var made: [String] = []

    private init(root: String, seed: UInt64, options: Options) {
        random = SplitMix64(seed: seed)
        self.root = root
        self.options = options
        summary.seed = seed
    }

    private func full(_ relative: String) -> String { relative.isEmpty ? root : root + "/" + relative }

    private func check(_ result: Int32, _ what: String, _ path: String) throws {
        if result != 0 { throw Failure(description: "\(what) \(path): \(String(cString: strerror(errno)))") }
    }

    private mutating func run() throws {
        try check(mkdir(root, 0o755), "mkdir", root)
        // The shape first: each directory under a random earlier one.
        let count = random.int(in: options.directories)
        for _ in 0..<count {
            var parent = directories[random.int(below: directories.count)]
            if parent.depth >= options.maxDepth { parent = directories[0] }
            let path = join(parent.path, uniqueName(in: parent.path))
            try check(mkdir(full(path), 0o755), "mkdir", full(path))
            directories.append((path, parent.depth + 1))
            summary.directories += 1
        }
        for directory in directories {
            try populate(directory.path)
        }
        for directory in directories {
            try decorate(directory.path, .directory)
        }
        try finish()
    }

    private func join(_ parent: String, _ name: String) -> String { parent.isEmpty ? name : parent + "/" + name }

    // MARK: Names

    private static let words = [
        "apple", "bridge", "cloud", "delta", "ember", "forest", "garden", "harbor", "island", "jungle",
        "kernel", "lantern", "meadow", "needle", "orbit", "pebble", "quartz", "river", "saddle", "tunnel",
        "umbrella", "valley", "window", "xylem", "yarrow", "zephyr",
    ]
    private static let oddNames = [
        "with space", "equals=sign", "back\\slash", "tab\there", "new\nline", "日本語", "ünïcödé", "emoji😀",
        "-dash", "#hash", "quote'd", "dquote\"d", "percent%41", "..dots", "...", "a", "A", "Z",
    ]

    /// A name not yet used in `directory`.
    private mutating func uniqueName(in directory: String) -> String {
        while true {
            let name: String
            switch random.int(below: 20) {
            case 0:
                name = Self.oddNames[random.int(below: Self.oddNames.count)] + (random.bool() ? "" : String(random.int(below: 100)))
            case 1:
                // Long names, up to the 255-byte limit.
                let length = random.int(in: 100...255)
                name = String((0..<length).map { _ in Character(Unicode.Scalar(UInt8(ascii: "a") + UInt8(random.int(below: 26)))) })
            case 2:
                name = "." + Self.words[random.int(below: Self.words.count)]
            default:
                name = Self.words[random.int(below: Self.words.count)] + "_" + String(random.int(below: 1000))
            }
            var st = stat()
            if lstat(full(join(directory, name)), &st) != 0 && errno == ENOENT { return name }
        }
    }

    // MARK: Entries

    private mutating func populate(_ directory: String) throws {
        let count = random.chance(options.largeDirectoryChance)
            ? random.int(in: options.largeDirectoryEntries) : random.int(in: options.entriesPerDirectory)
        for _ in 0..<count {
            let path = join(directory, uniqueName(in: directory))
            let roll = random.int(below: 100)
            switch roll {
            case 0..<66:
                try makeRegularFile(path)
            case 66..<80:
                try makeSymlink(path)
            case 80..<87 where options.hardlinks && !regularFiles.isEmpty:
                let target = regularFiles[random.int(below: regularFiles.count)]
                try check(link(full(target), full(path)), "link", full(path))
                summary.hardlinks += 1
            case 87..<91:
                try check(mkfifo(full(path), mode_t(randomFileMode())), "mkfifo", full(path))
                summary.fifos += 1
                try decorate(path, .special)
            case 91..<96 where options.privileged:
                let type = random.bool() ? S_IFCHR : S_IFBLK
                let device = Self.deviceNumber(major: random.int(in: 1...259), minor: random.int(in: 0...1023))
                try check(mknod(full(path), type | mode_t(randomFileMode()), device), "mknod", full(path))
                summary.devices += 1
                try decorate(path, .special)
            case 96..<100 where options.privileged && options.whiteouts:
                try check(mknod(full(path), S_IFCHR | mode_t(randomFileMode()), 0), "mknod", full(path))
                summary.whiteouts += 1
                // No xattrs: composefs stores a whiteout's own ones, but overlayfs shows
                // only those it adds.
                made.append(path)
            default:
                try makeRegularFile(path)
            }
        }
    }

    private mutating func makeRegularFile(_ path: String) throws {
        var bytes: [UInt8]
        if !contents.isEmpty && random.chance(0.05) {
            // Same contents as an earlier file: one object in the store.
            bytes = contents[random.int(below: contents.count)]
        } else {
            bytes = randomBytes(count: randomFileSize())
            contents.append(bytes)
        }
        let fd = open(full(path), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Failure(description: "create \(full(path)): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            guard n > 0 else { throw Failure(description: "write \(full(path)): \(String(cString: strerror(errno)))") }
            written += n
        }
        try check(fchmod(fd, mode_t(randomFileMode())), "chmod", full(path))
        summary.regularFiles += 1
        summary.bytes += bytes.count
        if bytes.count <= 64 { summary.inlineFiles += 1 } else { summary.backedFiles += 1 }
        regularFiles.append(path)
        try decorate(path, .regular)
    }

    private mutating func makeSymlink(_ path: String) throws {
        let target: String
        switch random.int(below: 6) {
        case 0: target = "/absolute/" + Self.words[random.int(below: Self.words.count)]
        case 1: target = String(repeating: "../", count: random.int(in: 1...4)) + "up"
        case 2: target = String(repeating: "long/", count: random.int(in: 20...200))  // up to 1000 bytes
        case 3: target = regularFiles.isEmpty ? "dangling" : "/" + regularFiles[random.int(below: regularFiles.count)]
        default: target = Self.words[random.int(below: Self.words.count)] + String(random.int(below: 100))
        }
        try check(symlink(target, full(path)), "symlink", full(path))
        summary.symlinks += 1
        try decorate(path, .symlink)
    }

    /// Size classes around the interesting boundaries: empty, inline (≤ 64), a block.
    private mutating func randomFileSize() -> Int {
        if random.chance(options.largeFileChance) { return random.int(in: 65536...max(65536, options.largeFileMaxSize)) }
        switch random.int(below: 12) {
        case 0: return 0
        case 1: return [63, 64, 65, 4095, 4096, 4097, 8192][random.int(below: 7)]
        case 2, 3, 4: return random.int(in: 1...64)
        case 5, 6, 7: return random.int(in: 65...4096)
        default: return random.int(in: 4097...40000)
        }
    }

    private mutating func randomBytes(count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { buffer in
            var i = 0
            while i + 8 <= buffer.count {
                buffer.storeBytes(of: random.next(), toByteOffset: i, as: UInt64.self)
                i += 8
            }
            while i < buffer.count {
                buffer[i] = UInt8(truncatingIfNeeded: random.next())
                i += 1
            }
        }
        return bytes
    }

    private mutating func randomFileMode() -> Int {
        var mode = [0o644, 0o600, 0o755, 0o444, 0o640, 0o777, 0o000, 0o711][random.int(below: 8)]
        // Now and then setuid, setgid or sticky.
        if random.chance(0.1) { mode |= [0o4000, 0o2000, 0o1000][random.int(below: 3)] }
        // Without root the tests must still be able to read everything back.
        return options.privileged ? mode : mode | 0o400
    }

    // MARK: Metadata

    private enum Kind { case directory, regular, symlink, special }

    /// Owner and xattrs (modes of directories and times come at the end).
    private mutating func decorate(_ path: String, _ kind: Kind) throws {
        made.append(path)
        if options.privileged && random.chance(0.3) {
            let ids: [UInt32] = [0, 1, 42, 1000, 65534, 65535, 65536, 1_000_000, 4_000_000_000]
            let uid = ids[random.int(below: ids.count)]
            let gid = ids[random.int(below: ids.count)]
            try check(lchown(full(path), uid, gid), "lchown", full(path))
        }
        guard options.xattrs && xattrsWork else { return }
        // user.* is only allowed on regular files and directories.
        let userAllowed = kind == .directory || kind == .regular
        for _ in 0..<random.int(in: 0...3) {
            var name: String
            if options.privileged && (!userAllowed || random.chance(0.3)) {
                name = random.chance(0.15) ? "trusted.overlay.custom" + String(random.int(below: 5)) : "trusted." + randomXattrSuffix()
            } else if userAllowed {
                name = "user." + randomXattrSuffix()
            } else {
                continue
            }
            let value: [UInt8] = random.chance(0.1) ? randomBytes(count: random.int(in: 100...900))
                : Array((Self.words[random.int(below: Self.words.count)] + String(random.int(below: 10))).utf8)
            let result = cfs_lsetxattr(full(path), name, value, value.count)
            if result == -EOPNOTSUPP || result == -EPERM {
                // The file system (or the lack of privileges) does not allow xattrs here.
                if name.hasPrefix("user.") { xattrsWork = false }
                return
            }
            guard result == 0 else {
                throw Failure(description: "setxattr \(name) \(full(path)): \(String(cString: strerror(-result)))")
            }
            summary.xattrs += 1
        }
    }

    private mutating func randomXattrSuffix() -> String {
        ["comment", "mime", "checksum", "origin", "tag", "x"][random.int(below: 6)] + String(random.int(below: 10))
    }

    /// Directory modes and every timestamp, deepest paths first so setting a child's
    /// time does not disturb its parent's afterwards.
    private mutating func finish() throws {
        var seen = Set<String>()
        let paths = made.filter { seen.insert($0).inserted }
            .sorted { $0.split(separator: "/").count > $1.split(separator: "/").count }
        for path in paths where options.randomTimes {
            try setRandomTime(path)
        }
        let deepestFirst = directories.sorted { $0.depth > $1.depth }
        for directory in deepestFirst {
            // Keep u+rwx so the tree stays readable and removable without root.
            let mode = [0o755, 0o700, 0o750, 0o777, 0o1777, 0o2755][random.int(below: 6)]
            try check(chmod(full(directory.path), mode_t(mode)), "chmod", full(directory.path))
            if options.randomTimes { try setRandomTime(directory.path) }
        }
    }

    private mutating func setRandomTime(_ path: String) throws {
        let seconds: Int
        switch random.int(below: 8) {
        case 0: seconds = 0
        case 1: seconds = 1_700_000_000  // shared by many entries
        case 2: seconds = random.int(in: 4_294_967_296...8_000_000_000)  // past 2106
        default: seconds = random.int(in: 1...2_000_000_000)
        }
        let nanoseconds = random.chance(0.3) ? 0 : random.int(below: 1_000_000_000)
        var times = [timespec(tv_sec: seconds, tv_nsec: nanoseconds), timespec(tv_sec: seconds, tv_nsec: nanoseconds)]
        try check(utimensat(AT_FDCWD, full(path), &times, AT_SYMLINK_NOFOLLOW), "utimensat", full(path))
    }

    /// makedev(3) (a macro Swift cannot see).
    static func deviceNumber(major: Int, minor: Int) -> dev_t {
        let (major, minor) = (UInt64(major), UInt64(minor))
        return dev_t((major & 0xFFFF_F000) << 32 | (major & 0xFFF) << 8 | (minor & 0xFFFF_FF00) << 12 | (minor & 0xFF))
    }
}
