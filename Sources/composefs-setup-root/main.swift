// composefs-setup-root: run in the initramfs after the physical root is mounted at /sysroot,
// it mounts the composefs image named on the kernel command line there instead, with the
// deployment's /etc and /var, as composefs-rs 0.9's tool of that name does (same options,
// same configuration file). Arguments are parsed here by hand: this executable goes into
// every initramfs and links nothing it does not need.

import ComposeFSBase
import SetupRoot

#if canImport(Glibc)
import Glibc
#endif

let usage = """
    Usage: composefs-setup-root [OPTIONS] [CMD]...

    Arguments:
      [CMD]...  Execute this command once the root is set up (for testing)

    Options:
          --sysroot <SYSROOT>  sysroot directory in initramfs [default: /sysroot]
          --config <CONFIG>    Config path (for testing) [default: /usr/lib/composefs/setup-root-conf.toml]
          --root-fs <ROOT_FS>  Bind mount root-fs from (for testing)
          --cmdline <CMDLINE>  Kernel commandline args (for testing)
          --target <TARGET>    Mountpoint (don't replace sysroot, for testing)
      -h, --help               Print help
      -V, --version            Print version

    """

/// The version of composefs-rs whose tool this replaces.
let version = "0.9.0"

/// Setting this builds the tree the way kernels before 6.15 need (for tests of that path).
let stagingVariable = "COMPOSEFS_SETUP_ROOT_STAGING"

struct Arguments {
    var sysroot = "/sysroot"
    var config = SetupRootConfig.defaultPath
    var rootFS: String?
    var commandLine: String?
    var target: String?
    var command: [String] = []
}

enum Outcome {
    case run(Arguments)
    case help
    case version
}

struct UsageError: Error {
    var message: String
}

func parse(_ words: ArraySlice<String>) throws(UsageError) -> Outcome {
    var arguments = Arguments()
    var seen: Set<String> = []
    var rest = words
    var onlyCommand = false
    while let word = rest.popFirst() {
        if onlyCommand || !word.hasPrefix("-") || word == "-" {
            arguments.command.append(word)
            continue
        }
        switch word {
        case "--": onlyCommand = true; continue
        case "-h", "--help": return .help
        case "-V", "--version": return .version
        default: break
        }
        guard word.hasPrefix("--") else { throw UsageError(message: "unexpected argument '\(word)' found") }
        let option: String
        var value: String?
        if let equals = word.firstIndex(of: "=") {
            option = String(word[..<equals])
            value = String(word[word.index(after: equals)...])
        } else {
            option = word
        }
        guard ["--sysroot", "--config", "--root-fs", "--cmdline", "--target"].contains(option) else {
            throw UsageError(message: "unexpected argument '\(option)' found")
        }
        guard seen.insert(option).inserted else { throw UsageError(message: "the argument '\(option)' cannot be used multiple times") }
        if value == nil { value = rest.popFirst() }
        guard let value else { throw UsageError(message: "a value is required for '\(option)' but none was supplied") }
        switch option {
        case "--sysroot": arguments.sysroot = value
        case "--config": arguments.config = value
        case "--root-fs": arguments.rootFS = value
        case "--cmdline": arguments.commandLine = value
        default: arguments.target = value
        }
    }
    return .run(arguments)
}

func fail(_ message: String, status: Int32) -> Never {
    let line = Array((message + "\n").utf8)
    try? withBytes(line) { (bytes) throws(SystemError) in try writeAll(2, bytes, path: "stderr") }
    exit(status)
}

func write(_ text: String) {
    try? withBytes(Array(text.utf8)) { (bytes) throws(SystemError) in try writeAll(1, bytes, path: "stdout") }
}

func setUp(_ arguments: Arguments) throws(SetupRootError) {
    let config = try SetupRootConfig.load(path: arguments.config)
    let commandLine: String
    if let given = arguments.commandLine {
        commandLine = given
    } else {
        do throws(SystemError) {
            commandLine = String(decoding: try readFile(SetupRoot.commandLinePath) ?? [], as: UTF8.self)
        } catch {
            throw .commandLineUnreadable(error)
        }
    }
    let forceStaging = getenv(stagingVariable).map { String(cString: $0) == "1" } ?? false
    try SetupRoot.run(
        SetupRootRequest(
            sysroot: arguments.sysroot, config: config, commandLine: commandLine, rootFS: arguments.rootFS,
            target: arguments.target, forceStaging: forceStaging))
}

let arguments: Arguments
do throws(UsageError) {
    switch try parse(CommandLine.arguments.dropFirst()) {
    case let .run(parsed): arguments = parsed
    case .help:
        write(usage)
        exit(0)
    case .version:
        write("composefs-setup-root \(version)\n")
        exit(0)
    }
} catch {
    fail("error: \(error.message)\n\n\(usage.split(separator: "\n").first ?? "")\n\nFor more information, try '--help'.", status: 2)
}

SetupRoot.linkVolatileRoot()
do throws(SetupRootError) { try setUp(arguments) } catch { fail("Error: \(error)", status: 1) }

if let program = arguments.command.first {
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.command.map { strdup($0) } + [nil]
    execvp(program, &argv)
    fail("Error: cannot run \(program): \(SystemError.message(errno))", status: 127)
}
