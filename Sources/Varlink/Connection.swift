// One end of a varlink connection: NUL-terminated messages over a Unix stream socket, with
// descriptors passed alongside (SCM_RIGHTS).

import CVarlinkSys
import ComposeFSBase

#if canImport(Glibc)
import Glibc
#endif

public enum VarlinkConnectionError: Error, Sendable, CustomStringConvertible {
    /// More than `maximumMessageSize` bytes without a NUL: the stream cannot be resynchronized.
    case messageTooLarge(limit: Int)
    /// The service closed the connection before the reply (client side).
    case closedBeforeReply(path: String)
    /// A reply that is not varlink JSON (client side).
    case malformedReply(path: String)
    case system(SystemError)

    public var description: String {
        switch self {
        case let .messageTooLarge(limit): "message larger than \(limit) bytes"
        case let .closedBeforeReply(path): "\(path): connection closed before the reply"
        case let .malformedReply(path): "\(path): the reply is not a varlink message"
        case let .system(error): error.description
        }
    }
}

/// A message received, with the descriptors that arrived with its bytes.
public struct VarlinkMessage: Sendable {
    public var bytes: [UInt8]
    public var fileDescriptors: [FileDescriptor]
}

public final class VarlinkConnection: @unchecked Sendable {
    /// Requests (and replies read by a client) larger than this end the connection.
    public static let maximumMessageSize = 16 << 20

    public let socket: FileDescriptor
    private var buffer: [UInt8] = []
    /// Where the search for the next NUL resumes.
    private var scanned = 0
    /// Descriptors received and not yet handed out, each batch with the offset in `buffer`
    /// where the message it came with starts.
    private var pendingDescriptors: [(start: Int, descriptors: [FileDescriptor])] = []

    public init(socket: FileDescriptor) { self.socket = socket }

    /// Connects to the socket at `path`.
    public static func connect(path: String) throws(SystemError) -> VarlinkConnection {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket", path: path) }
        let socket = FileDescriptor(owning: fd, path: path)
        let result = try UnixAddress(path: path).withSockaddr { address, length in
            Glibc.connect(fd, address, length)
        }
        guard result == 0 else { throw SystemError("connect to", path: path) }
        return VarlinkConnection(socket: socket)
    }

    /// The next message, nil once the peer has closed (a partial message at the end is dropped).
    public func receive() throws(VarlinkConnectionError) -> VarlinkMessage? {
        while true {
            if let end = buffer[scanned...].firstIndex(of: 0) {
                let mine = pendingDescriptors.filter { $0.start <= end }.flatMap(\.descriptors)
                pendingDescriptors = pendingDescriptors.filter { $0.start > end }.map { ($0.start - end - 1, $0.descriptors) }
                let message = VarlinkMessage(bytes: Array(buffer[..<end]), fileDescriptors: mine)
                buffer.removeSubrange(...end)
                scanned = 0
                return message
            }
            scanned = buffer.count
            guard buffer.count < Self.maximumMessageSize else { throw .messageTooLarge(limit: Self.maximumMessageSize) }
            var chunk = [UInt8](repeating: 0, count: 64 * 1024)
            var descriptors = [Int32](repeating: -1, count: Int(CVL_MAX_FDS))
            var descriptorCount: Int32 = 0
            let count = chunk.withUnsafeMutableBytes { bytes in
                cvl_receive_with_fds(socket.raw, bytes.baseAddress, bytes.count, &descriptors, CVL_MAX_FDS, &descriptorCount)
            }
            let received = descriptors.prefix(Int(descriptorCount)).map { FileDescriptor(owning: $0, path: "descriptor from \(socket.path)") }
            if count < 0 {
                if -count == ECONNRESET { return nil }
                throw .system(SystemError("receive from", path: socket.path, code: Int32(-count)))
            }
            if count == 0 { return nil }
            let old = buffer.count
            buffer += chunk.prefix(count)
            // At most what one sendmsg can carry waits here; more would only exhaust the
            // process's descriptors, so the rest are closed.
            let room = Int(CVL_MAX_FDS) - pendingDescriptors.reduce(0) { $0 + $1.descriptors.count }
            guard !received.isEmpty, room > 0 else { continue }
            // The kernel ends a read with the data that carried descriptors, and a sender
            // attaches them to a message's first bytes: they belong to the last message that
            // starts in this read.
            let start = (old..<buffer.count).last { $0 == 0 || buffer[$0 - 1] == 0 } ?? (buffer[..<old].lastIndex(of: 0).map { $0 + 1 } ?? 0)
            pendingDescriptors.append((start, Array(received.prefix(room))))
        }
    }

    /// Sends one message (the NUL is added) with `descriptors` attached to its first bytes.
    public func send(_ message: [UInt8], descriptors: [Int32] = []) throws(SystemError) {
        var bytes = message
        bytes.append(0)
        var offset = 0
        var attached = descriptors
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { buffer in
                cvl_send_with_fds(
                    socket.raw, buffer.baseAddress.map { $0 + offset }, buffer.count - offset, attached, Int32(attached.count))
            }
            guard sent >= 0 else { throw SystemError("send to", path: socket.path, code: Int32(-sent)) }
            offset += sent
            attached = []
        }
    }

    public func send(_ reply: VarlinkReply, descriptors: [Int32] = []) throws(SystemError) {
        try send(reply.encoded, descriptors: descriptors)
    }

    /// Client side: sends `call` and reads its replies until one does not continue (none for
    /// a oneway call). The descriptors received come with each reply.
    public func call(
        _ call: VarlinkCall, descriptors: [Int32] = []
    ) throws(VarlinkConnectionError) -> [(reply: VarlinkReply, descriptors: [FileDescriptor])] {
        do { try send(call.encoded, descriptors: descriptors) } catch { throw .system(error) }
        guard !call.oneway else { return [] }
        var replies: [(reply: VarlinkReply, descriptors: [FileDescriptor])] = []
        while true {
            guard let message = try receive() else { throw .closedBeforeReply(path: socket.path) }
            let reply: VarlinkReply
            do { reply = try VarlinkReply(decoding: message.bytes) } catch { throw .malformedReply(path: socket.path) }
            replies.append((reply, message.fileDescriptors))
            if case .parameters(_, continues: true) = reply { continue }
            return replies
        }
    }
}

/// A `sockaddr_un` for a path.
struct UnixAddress {
    var storage = sockaddr_un()

    init(path: String) throws(SystemError) {
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: storage.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { throw SystemError("use socket path", path: path, code: ENAMETOOLONG) }
        storage.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &storage.sun_path) { $0.copyBytes(from: bytes) }
    }

    func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafeBytes(of: storage) { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
}
