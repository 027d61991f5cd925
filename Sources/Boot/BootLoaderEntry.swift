// A Boot Loader Specification Type 1 entry (loader/entries/*.conf), kept as its lines so that
// what is not changed is written back byte for byte. A line is a key's when it starts with the
// key followed by ASCII white space; its value is the rest without leading white space (trailing
// white space is part of it), as composefs-rs 0.9 reads entries.
//
// Kernel arguments go on the first `options` line. Unlike 0.9, which replaces the first
// parameter that merely starts with the argument's key (so `ro` replaced `root=…`), parameters
// are matched by key as the kernel splits them; the composefs argument takes the place of the
// first `composefs=`/`composefs.digest=` there and the others are removed (a stale one would be
// tried first at boot); and an argument is put before a `--`, after which the kernel hands
// everything to init.

import ComposeFS

public struct BootLoaderEntry: Equatable, Sendable {
    public static let linuxKey = "linux"
    public static let initrdKey = "initrd"
    public static let efiKey = "efi"
    public static let optionsKey = "options"
    /// The keys naming files on the boot partition.
    public static let fileKeys = [linuxKey, initrdKey, efiKey]

    public var lines: [String]

    /// The lines of `text`, split at "\n" (no empty line after a final one).
    public init(_ text: String) {
        var lines = Array(text.unicodeScalars).split(separator: "\n", omittingEmptySubsequences: false).map { Self.string($0) }
        if lines.last?.isEmpty == true { lines.removeLast() }
        self.lines = lines
    }

    /// The file: the lines, each ended by "\n".
    public var text: String { lines.map { $0 + "\n" }.joined() }

    /// The values of every line of `key`, in order.
    public func values(_ key: String) -> [String] { lines.compactMap { Self.split($0, key: key)?.value } }

    /// The value of the first line of `key`.
    public func value(_ key: String) -> String? { values(key).first }

    /// The kernel's parameters on the first options line (the one arguments go on).
    public var commandLine: [KernelCommandLine.Parameter] { value(Self.optionsKey).map { KernelCommandLine.parameters($0) } ?? [] }

    /// A line as the key with its white space, and the value; nil when it is not `key`'s line.
    static func split(_ line: String, key: String) -> (head: String, value: String)? {
        let scalars = Array(line.unicodeScalars)
        let keyScalars = Array(key.unicodeScalars)
        guard scalars.starts(with: keyScalars), scalars.count > keyScalars.count,
            [" ", "\t", "\n", "\u{0C}", "\r"].contains(scalars[keyScalars.count])
        else { return nil }
        let start = scalars[keyScalars.count...].firstIndex { !$0.properties.isWhitespace } ?? scalars.count
        return (string(scalars[..<start]), string(scalars[start...]))
    }

    static func string(_ scalars: some Sequence<Unicode.Scalar>) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    /// Sets the composefs kernel argument (see the file's comment).
    public mutating func setBootArgument(_ argument: BootArgument) {
        put(argument.text) { BootArgument.isComposefsKey($0.key) }
    }

    /// Adds a kernel parameter, in place of the first one with its key if there is one.
    public mutating func addParameter(_ parameter: KernelCommandLine.Parameter) {
        put(parameter.raw) { $0.key == parameter.key }
    }

    private mutating func put(_ argument: String, replacing matches: (KernelCommandLine.Parameter) -> Bool) {
        for (index, line) in lines.enumerated() {
            guard let (head, value) = Self.split(line, key: Self.optionsKey) else { continue }
            var bytes = Array(value.utf8)
            let (parameters, initArguments) = KernelCommandLine.locate(bytes)
            let matching = parameters.filter { matches($0.parameter) }
            if let first = matching.first {
                for other in matching.dropFirst().reversed() {
                    var start = other.range.lowerBound
                    while start > first.range.upperBound && KernelCommandLine.isSpace(bytes[start - 1]) { start -= 1 }
                    bytes.removeSubrange(start..<other.range.upperBound)
                }
                bytes.replaceSubrange(first.range, with: Array(argument.utf8))
            } else if let initArguments {
                bytes.insert(contentsOf: Array((argument + " ").utf8), at: initArguments)
            } else {
                lines[index] = line + " " + argument
                return
            }
            lines[index] = head + String(decoding: bytes, as: UTF8.self)
            return
        }
        lines.append(Self.optionsKey + " " + argument)
    }
}

extension KernelCommandLine {
    /// A parameter and where it is written (UTF-8 offsets).
    struct Located {
        var parameter: Parameter
        var range: Range<Int>
    }

    /// The kernel's white space.
    static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }

    /// The parameters of a command line with where each is, and where the `--` that hands the
    /// rest to init starts, if there is one.
    static func locate(_ commandLine: [UInt8]) -> (parameters: [Located], initArguments: Int?) {
        var located: [Located] = []
        var cursor = 0
        for parameter in parameters(String(decoding: commandLine, as: UTF8.self)) {
            let raw = Array(parameter.raw.utf8)
            guard let range = commandLine[cursor...].firstRange(of: raw) else { break }
            located.append(Located(parameter: parameter, range: range))
            cursor = range.upperBound
        }
        return (located, commandLine[cursor...].firstIndex { !isSpace($0) })
    }
}
