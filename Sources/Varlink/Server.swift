// A varlink server: an accept loop on a listening Unix socket, one thread per connection (so
// a slow or silent client holds up only itself), calls answered in order on each connection.
// org.varlink.service (GetInfo, GetInterfaceDescription) is answered here; everything else
// goes to the service.

import CVarlinkSys
import ComposeFSBase

#if canImport(Glibc)
import Glibc
#endif

/// What GetInfo reports.
public struct VarlinkServiceInfo: Sendable {
    public var vendor: String
    public var product: String
    public var version: String
    public var url: String

    public init(vendor: String, product: String, version: String, url: String) {
        self.vendor = vendor
        self.product = product
        self.version = version
        self.url = url
    }
}

/// An interface a service implements: its name and its interface definition (IDL) text.
public struct VarlinkInterface: Sendable {
    public var name: String
    public var description: String

    public init(name: String, description: String) {
        self.name = name
        self.description = description
    }
}

/// The final reply to a call: parameters with the descriptors to pass, or an error.
public enum VarlinkOutcome: Sendable {
    case reply([(String, JSONValue)], descriptors: [FileDescriptor] = [])
    case error(VarlinkError)

    public static let empty = VarlinkOutcome.reply([])
}

/// Replies before the final one, for calls made with `more`.
public protocol VarlinkReplyStream {
    /// Sends a reply that continues, with descriptors; false once the client is gone (the
    /// call should end then).
    func send(_ parameters: [(String, JSONValue)], descriptors: [FileDescriptor]) -> Bool
}

extension VarlinkReplyStream {
    public func send(_ parameters: [(String, JSONValue)]) -> Bool { send(parameters, descriptors: []) }
}

public protocol VarlinkService: Sendable {
    var info: VarlinkServiceInfo { get }
    /// The interfaces answered by `handle` (org.varlink.service is added by the server).
    var interfaces: [VarlinkInterface] { get }
    /// Answers a call to one of `interfaces` (MethodNotFound for a method it does not have).
    /// `descriptors` came with the call; `stream` takes intermediate replies when `call.more`.
    func handle(_ call: VarlinkCall, descriptors: [FileDescriptor], stream: any VarlinkReplyStream) -> VarlinkOutcome
}

public enum VarlinkServer {
    public static let serviceInterface = "org.varlink.service"

    /// Serves connections accepted on `listener` until the process ends.
    public static func serve(listener: FileDescriptor, service: some VarlinkService) -> Never {
        while true {
            let fd = cvl_accept(listener.raw)
            guard fd >= 0 else {
                // Out of descriptors (or a transient error): wait rather than spin.
                if -fd != ECONNABORTED { usleep(100_000) }
                continue
            }
            let connection = VarlinkConnection(socket: FileDescriptor(owning: fd, path: listener.path))
            startDetachedThread { serve(connection: connection, service: service) }
        }
    }

    /// Answers calls on one connection until the client closes it (or sends something that
    /// ends it: an oversized message).
    public static func serve(connection: VarlinkConnection, service: some VarlinkService) {
        while true {
            let message: VarlinkMessage?
            do {
                message = try connection.receive()
            } catch .messageTooLarge {
                try? connection.send(.error(.invalidParameter("")))
                return
            } catch {
                return
            }
            guard let message else { return }
            let call: VarlinkCall
            do { call = try VarlinkCall(decoding: message.bytes) } catch {
                guard (try? connection.send(.error(error))) != nil else { return }
                continue
            }
            guard answer(call, descriptors: message.fileDescriptors, on: connection, service: service) else { return }
        }
    }

    /// Answers one call; false once the connection is unusable.
    static func answer(
        _ call: VarlinkCall, descriptors: [FileDescriptor], on connection: VarlinkConnection, service: some VarlinkService
    ) -> Bool {
        let stream = ConnectionStream(connection: connection, enabled: call.more && !call.oneway)
        let outcome: VarlinkOutcome
        if call.interface == serviceInterface {
            outcome = answerServiceCall(call, service: service)
        } else if !service.interfaces.contains(where: { $0.name == call.interface }) {
            outcome = .error(.interfaceNotFound(call.interface))
        } else {
            outcome = service.handle(call, descriptors: descriptors, stream: stream)
        }
        guard !call.oneway, !stream.failed else { return !stream.failed }
        do {
            switch outcome {
            case let .reply(parameters, replyDescriptors):
                try connection.send(.parameters(parameters, continues: call.more ? false : nil), descriptors: replyDescriptors.map(\.raw))
                withExtendedLifetime(replyDescriptors) {}
            case let .error(error):
                try connection.send(.error(error))
            }
            return true
        } catch {
            return false
        }
    }

    static func answerServiceCall(_ call: VarlinkCall, service: some VarlinkService) -> VarlinkOutcome {
        let interfaces = [VarlinkInterface(name: serviceInterface, description: serviceDescription)] + service.interfaces
        switch call.method {
        case serviceInterface + ".GetInfo":
            let info = service.info
            return .reply([
                ("vendor", .string(info.vendor)), ("product", .string(info.product)), ("version", .string(info.version)),
                ("url", .string(info.url)), ("interfaces", .array(interfaces.map { .string($0.name) })),
            ])
        case serviceInterface + ".GetInterfaceDescription":
            let name: String
            do { name = try call.parameters.string("interface") } catch { return .error(error) }
            guard let interface = interfaces.first(where: { $0.name == name }) else { return .error(.interfaceNotFound(name)) }
            return .reply([("description", .string(interface.description))])
        default:
            return .error(.methodNotFound(call.method))
        }
    }

    /// The definition of org.varlink.service, as the varlink specification gives it.
    public static let serviceDescription = """
        # The Varlink Service Interface is provided by every varlink service. It
        # describes the service and the interfaces it implements.
        interface org.varlink.service

        # Get a list of all the interfaces a service provides and information
        # about the implementation.
        method GetInfo() -> (
          vendor: string,
          product: string,
          version: string,
          url: string,
          interfaces: []string
        )

        # Get the description of an interface that is implemented by this service.
        method GetInterfaceDescription(interface: string) -> (description: string)

        # The requested interface was not found.
        error InterfaceNotFound (interface: string)

        # The requested method was not found
        error MethodNotFound (method: string)

        # The interface defines the requested method, but the service does not
        # implement it.
        error MethodNotImplemented (method: string)

        # One of the passed parameters is invalid.
        error InvalidParameter (parameter: string)

        # Client is denied access
        error PermissionDenied ()

        # Method is expected to be called with 'more' set to true, but wasn't
        error ExpectedMore ()

        """

    // MARK: Sockets

    /// A listening socket bound at `path` (which must not exist yet).
    public static func listen(path: String) throws(SystemError) -> FileDescriptor {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", path: path) }
        let listener = FileDescriptor(owning: fd, path: path)
        let result = try UnixAddress(path: path).withSockaddr { address, length in bind(fd, address, length) }
        guard result == 0 else { throw SystemError("bind varlink socket at", path: path) }
        guard Glibc.listen(fd, SOMAXCONN) == 0 else { throw SystemError("listen on", path: path) }
        return listener
    }

    /// A socket handed over by a service manager (`LISTEN_FDS`/`LISTEN_PID`, descriptor 3),
    /// taken once: the variables are removed so no child inherits them.
    public enum ActivatedSocket {
        /// A listening socket (a systemd socket unit with Accept=no).
        case listening(FileDescriptor)
        /// One connection already made (`varlinkctl exec:`, Accept=yes).
        case connected(VarlinkConnection)
    }

    public static func takeActivatedSocket() throws(SystemError) -> ActivatedSocket? {
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pidText = getenv("LISTEN_PID").map({ String(cString: $0) }), pid_t(pidText) == getpid(),
            let countText = getenv("LISTEN_FDS").map({ String(cString: $0) }), let count = Int(countText), count >= 1
        else { return nil }
        let fd: Int32 = 3
        guard fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else { throw SystemError("take activated socket", path: "descriptor 3") }
        let socket = FileDescriptor(owning: fd, path: "activated socket")
        var accepting: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0 else {
            throw SystemError("query SO_ACCEPTCONN of", path: "descriptor 3")
        }
        return accepting != 0 ? .listening(socket) : .connected(VarlinkConnection(socket: socket))
    }
}

/// Sends intermediate replies on a connection; after a failed send nothing more is sent.
final class ConnectionStream: VarlinkReplyStream {
    let connection: VarlinkConnection
    let enabled: Bool
    private(set) var failed = false

    init(connection: VarlinkConnection, enabled: Bool) {
        self.connection = connection
        self.enabled = enabled
    }

    func send(_ parameters: [(String, JSONValue)], descriptors: [FileDescriptor]) -> Bool {
        guard enabled, !failed else { return !failed }
        do { try connection.send(.parameters(parameters, continues: true), descriptors: descriptors.map(\.raw)) } catch { failed = true }
        withExtendedLifetime(descriptors) {}
        return !failed
    }
}

/// Runs `body` on a new detached thread (work that may block for long, which a shared pool
/// must not be held up by); drops it when no thread can be made.
public func startDetachedThread(_ body: @escaping @Sendable () -> Void) {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(&thread, nil, { pointer in
        guard let pointer else { return nil }
        let box = Unmanaged<Box>.fromOpaque(pointer).takeRetainedValue()
        box.body()
        return nil
    }, box)
    if result == 0 {
        pthread_detach(thread)
    } else {
        // No thread to be had: the work (a connection) is dropped rather than stall the caller.
        Unmanaged<Box>.fromOpaque(box).release()
    }
}
