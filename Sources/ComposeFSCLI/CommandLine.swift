// What the command-line tools share: reference-compatible error reporting and
// exit codes (1 for every failure, usage errors included).

import ArgumentParser
import ComposeFSBase

#if canImport(Glibc)
import Glibc
#endif

/// A failure to report as "PROGRAM: message" with exit code 1.
public struct ToolError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension ParsableCommand {
    /// Parses arguments and runs, reporting any error the way the reference tools do:
    /// "PROGRAM: message" (the C tools), or `errorPrefix` + message (cfsctl's "Error: ").
    public static func runAsTool(errorPrefix: String? = nil) {
        let program = CommandLine.arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? _commandName
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as ToolError {
            writeStandardError((errorPrefix ?? "\(program): ") + error.description + "\n")
            Glibc.exit(1)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                // --help and similar.
                exit(withError: error)
            }
            writeStandardError(fullMessage(for: error) + "\n")
            Glibc.exit(1)
        }
    }
}

public func writeStandardError(_ message: String) { writeText(message, to: 2) }

public func writeStandardOutput(_ text: String) { writeText(text, to: 1) }

/// Best effort: there is nowhere left to report a failure to write to stdout or stderr.
private func writeText(_ text: String, to fd: Int32) {
    try? withBytes(Array(text.utf8)) { (bytes) throws(SystemError) in try writeAll(fd, bytes, path: "") }
}
