// `cfsctl varlink` and `cfsctl oci varlink`: composefs-rs 0.9's varlink service
// (org.composefs.Repository and org.composefs.Oci, the same on both) on a Unix socket, on a
// socket handed over by a service manager, or, started bare with one (`varlinkctl
// exec:cfsctl`), on that.

import ArgumentParser
import ComposeFSBase
import ComposeFSCLI
import ComposeFSVarlink
import Varlink

#if canImport(Glibc)
import Glibc
#endif

struct VarlinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "varlink", abstract: "Serve the varlink RPC API on a Unix socket or systemd socket.")
    @ParentCommand var global: Cfsctl
    @Option(help: "Unix socket path to listen on (omit when using systemd socket activation)") var address: String?

    func run() throws { try serveVarlink(global: global, address: address) }
}

struct OciVarlinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "varlink", abstract: "Serve the varlink RPC API (the same service as `cfsctl varlink`).")
    @ParentCommand var global: Cfsctl
    @Option(help: "Unix socket path to listen on (omit when using systemd socket activation)") var address: String?

    func run() throws { try serveVarlink(global: global, address: address) }
}

/// Serves until killed (or, on a connection handed over, until the client closes it). The
/// repository flags (--insecure, --require-verity, --no-upgrade) apply to every repository
/// opened; --repo and the like do not: clients open repositories by path.
func serveVarlink(global: Cfsctl, address: String?) throws -> Never {
    ignoreBrokenPipes()
    let service = CfsctlVarlinkService(
        options: .init(insecure: global.insecure, requireVerity: global.requireVerity, noUpgrade: global.noUpgrade))
    if let activated = try VarlinkServer.takeActivatedSocket() { serve(activated, service) }
    guard let address else { throw ToolError("no --address given and not socket-activated") }
    VarlinkServer.serve(listener: try VarlinkServer.listen(path: address), service: service)
}

/// `cfsctl` run without arguments on a socket from a service manager serves it (with the
/// default repository flags); anything else returns to the command line.
func serveVarlinkIfActivatedBare() {
    guard CommandLine.arguments.count == 1, getenv("LISTEN_FDS") != nil else { return }
    do {
        guard let activated = try VarlinkServer.takeActivatedSocket() else { return }
        ignoreBrokenPipes()
        serve(activated, CfsctlVarlinkService())
    } catch {
        writeStandardError("Error: \(error)\n")
        exit(1)
    }
}

/// A client that closes a layer's pipe (GetLayer) ends the thread writing it, with EPIPE,
/// rather than the service.
private func ignoreBrokenPipes() { signal(SIGPIPE, SIG_IGN) }

private func serve(_ socket: VarlinkServer.ActivatedSocket, _ service: CfsctlVarlinkService) -> Never {
    switch socket {
    case let .listening(listener):
        VarlinkServer.serve(listener: listener, service: service)
    case let .connected(connection):
        VarlinkServer.serve(connection: connection, service: service)
        exit(0)
    }
}
