// End-to-end tests of `cfsctl varlink`: the service started on a socket in a scratch directory
// (or by systemd-socket-activate) and called over the wire, method by method, with composefs-rs
// 0.9's parameter, reply and error names; bad requests, slow clients and descriptor passing
// (mounts returned as detached mount descriptors, layers copied between two services with
// GetLayer, PutLayer and FinalizeImage). varlinkctl is used too where installed.

import CComposeFSSys
import ComposeFSBase
import Crypto
import Foundation
import Synchronization
import Testing
import Varlink

#if canImport(Glibc)
import Glibc
#endif

/// A running `cfsctl varlink`, stopped when the value goes away.
final class VarlinkService: @unchecked Sendable {
    let work = try! TemporaryDirectory()
    var socket: String { work.url.appendingPathComponent("cfsctl.sock").path }
    let process = Process()

    /// `cfsctl [GLOBAL] varlink --address SOCKET` (or the `oci varlink` spelling).
    init(global: [String] = ["--insecure"], command: [String] = ["varlink"]) throws {
        process.executableURL = productsDirectory().appendingPathComponent("cfsctl")
        process.arguments = global + command + ["--address", socket]
        try process.run()
        try Self.waitForSocket(socket)
    }

    /// Started by `launcher` (systemd-socket-activate …), which binds `socket` itself.
    init(launcher: [String]) throws {
        process.executableURL = URL(fileURLWithPath: launcher[0])
        process.arguments = Array(launcher.dropFirst()).map { $0.replacingOccurrences(of: "@SOCKET@", with: socket) }
        try process.run()
        try Self.waitForSocket(socket)
    }

    deinit {
        // SIGKILL: children of the test process inherit its blocked signals, SIGTERM among them.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    static func waitForSocket(_ path: String) throws {
        for _ in 0..<200 {
            if (try? VarlinkConnection.connect(path: path)) != nil { return }
            usleep(50_000)
        }
        throw VarlinkTests.Failure("the service did not listen on \(path)")
    }

    func connect() throws -> VarlinkConnection { try VarlinkConnection.connect(path: socket) }

    /// One call on a new connection; its replies.
    func call(_ method: String, _ parameters: [(String, JSONValue)] = [], more: Bool = false, descriptors: [Int32] = []) throws
        -> [(reply: VarlinkReply, descriptors: [FileDescriptor])]
    {
        try connect().call(VarlinkCall(method: method, parameters: VarlinkParameters(parameters), more: more), descriptors: descriptors)
    }

    /// The parameters of a call's (single) successful reply.
    func reply(_ method: String, _ parameters: [(String, JSONValue)] = []) throws -> JSONValue {
        let replies = try call(method, parameters)
        guard replies.count == 1, case let .parameters(values, _) = replies[0].reply else {
            throw VarlinkTests.Failure("\(method): \(replies.map(\.reply))")
        }
        return .object(values)
    }

    /// The error a call fails with (its name and parameters).
    func error(_ method: String, _ parameters: [(String, JSONValue)] = []) throws -> VarlinkError {
        let replies = try call(method, parameters)
        guard replies.count == 1, case let .error(error) = replies[0].reply else {
            throw VarlinkTests.Failure("\(method) did not fail: \(replies.map(\.reply))")
        }
        return error
    }

    func open(_ repo: String) throws -> Int64 {
        guard case let .integer(handle)? = try reply("org.composefs.Repository.OpenRepository", [("path", .string(repo))])["handle"] else {
            throw VarlinkTests.Failure("OpenRepository \(repo) gave no handle")
        }
        return handle
    }
}

@Suite(.serialized) struct VarlinkTests {
    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    let work = try! TemporaryDirectory()

    func cfsctl(_ arguments: [String]) throws -> String {
        let result = try runTool("cfsctl", arguments)
        guard result.status == 0 else { throw Failure("cfsctl \(arguments): \(result.stderr)") }
        return result.stdout
    }

    /// A SHA-512 repository (insecure: this kernel may lack fs-verity) with `rootfs` stored as
    /// the image `my-image`.
    func repositoryWithImage() throws -> (repo: String, rootfs: String) {
        let repo = work.url.appendingPathComponent("repo").path
        _ = try cfsctl(["--repo", repo, "init", "--insecure"])
        let rootfs = work.url.appendingPathComponent("rootfs").path
        for directory in ["usr/bin", "usr/lib", "etc"] {
            try FileManager.default.createDirectory(atPath: rootfs + "/" + directory, withIntermediateDirectories: true)
        }
        try Data(repeating: UInt8(ascii: "x"), count: 128 * 1024).write(to: URL(fileURLWithPath: rootfs + "/usr/bin/hello"))
        try Data("test fixture\n".utf8).write(to: URL(fileURLWithPath: rootfs + "/usr/lib/readme.txt"))
        try Data("integration-test\n".utf8).write(to: URL(fileURLWithPath: rootfs + "/etc/hostname"))
        _ = try cfsctl(["--repo", repo, "create-image", rootfs, "my-image"])
        return (repo, rootfs)
    }

    // MARK: org.composefs.Repository

    @Test func initEnsureOpenAndClose() throws {
        let service = try VarlinkService()
        let fresh = work.url.appendingPathComponent("a/b/repo").path
        var reply = try service.reply("org.composefs.Repository.InitRepository", [("path", .string(fresh)), ("insecure", .bool(true))])
        #expect(reply["created"] == .bool(true))
        reply = try service.reply("org.composefs.Repository.InitRepository", [("path", .string(fresh)), ("insecure", .bool(true))])
        #expect(reply["created"] == .bool(false))
        let meta = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: fresh + "/meta.json"))))
        #expect(meta["algorithm"] == .string("fsverity-sha512-12"))

        var error = try service.error(
            "org.composefs.Repository.InitRepository", [("path", .string(fresh + "2")), ("algorithm", .string("not-an-algorithm"))])
        #expect(error.name == "org.composefs.Repository.InvalidSpec")
        // A repository of another format is not re-initialized, and stays as it is.
        let v2 = work.url.appendingPathComponent("v2").path
        _ = try cfsctl(["--repo", v2, "init", "--insecure", "--erofs-version", "2"])
        let before = try Data(contentsOf: URL(fileURLWithPath: v2 + "/meta.json"))
        error = try service.error("org.composefs.Repository.InitRepository", [("path", .string(v2)), ("insecure", .bool(true))])
        #expect(error.name == "org.composefs.Repository.InternalError")
        reply = try service.reply("org.composefs.Repository.EnsureRepository", [("path", .string(v2)), ("insecure", .bool(true))])
        #expect(reply["status"] == .string("Opened"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: v2 + "/meta.json")) == before)
        let nested = work.url.appendingPathComponent("x/y/repo").path
        reply = try service.reply(
            "org.composefs.Repository.EnsureRepository",
            [("path", .string(nested)), ("algorithm", .string("fsverity-sha256-12")), ("insecure", .bool(true))])
        #expect(reply["status"] == .string("Created"))
        // One from before meta.json is upgraded.
        let legacy = work.url.appendingPathComponent("legacy").path
        try FileManager.default.createDirectory(atPath: legacy + "/objects/ab", withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: legacy + "/objects/ab/" + String(repeating: "c", count: 126)))
        reply = try service.reply("org.composefs.Repository.EnsureRepository", [("path", .string(legacy)), ("insecure", .bool(true))])
        #expect(reply["status"] == .string("Upgraded"))

        reply = try service.reply("org.composefs.Repository.OpenRepository", [("path", .string(fresh))])
        guard case let .integer(handle)? = reply["handle"] else { throw Failure("no handle: \(reply)") }
        #expect(handle >= 1)
        #expect(reply["hash_algorithm"] == .string("sha512"))
        if case .integer? = reply["objects_device_id"] {} else { Issue.record("no objects_device_id: \(reply)") }
        let second = try service.open(nested)
        #expect(second != handle)
        #expect(try service.reply("org.composefs.Repository.OpenRepository", [("path", .string(nested))])["hash_algorithm"] == .string("sha256"))

        for selectors in [[], [("path", JSONValue.string(fresh)), ("user", .bool(true))], [("user", .bool(true)), ("system", .bool(true))]] {
            #expect(try service.error("org.composefs.Repository.OpenRepository", selectors).name == "org.composefs.Repository.InvalidSpec")
        }
        error = try service.error("org.composefs.Repository.OpenRepository", [("path", .string(work.url.path + "/nothing"))])
        #expect(error.name == "org.composefs.Repository.RepoNotFound")
        if case let .string(message)? = JSONValue.object(error.parameters)["message"] { #expect(message.contains("nothing")) }

        #expect(try service.reply("org.composefs.Repository.Fsck", [("handle", .integer(handle))])["ok"] == .bool(true))
        _ = try service.reply("org.composefs.Repository.CloseRepository", [("handle", .integer(handle))])
        for method in ["org.composefs.Repository.Fsck", "org.composefs.Repository.CloseRepository"] {
            error = try service.error(method, [("handle", .integer(handle))])
            #expect(error.name == "org.composefs.Repository.InvalidHandle")
            #expect(JSONValue.object(error.parameters)["handle"] == .integer(handle))
        }
        error = try service.error("org.composefs.Oci.ListImages", [("handle", .integer(424242))])
        #expect(error.name == "org.composefs.Oci.InvalidHandle")
    }

    @Test func fsckGcImageObjectsAndRefs() throws {
        let (repo, rootfs) = try repositoryWithImage()
        let service = try VarlinkService()
        let handle = JSONValue.integer(try service.open(repo))

        var reply = try service.reply("org.composefs.Repository.Fsck", [("handle", handle)])
        #expect(reply["ok"] == .bool(true))
        #expect(reply["has_metadata"] == .bool(true))
        #expect(reply["errors"] == .array([]))
        guard case let .integer(checked)? = reply["objects_checked"] else { throw Failure("\(reply)") }
        #expect(checked > 0)
        reply = try service.reply("org.composefs.Repository.Fsck", [("handle", handle), ("metadata_only", .bool(true))])
        #expect(reply["objects_checked"] == .integer(0))
        // The same document as `cfsctl fsck --json`.
        let cli = try JSONValue.parse(Array(try cfsctl(["--repo", repo, "fsck", "--json"]).utf8))
        #expect(try service.reply("org.composefs.Repository.Fsck", [("handle", handle)]) == cli)

        reply = try service.reply("org.composefs.Repository.ImageObjects", [("handle", handle), ("name", .string("refs/my-image"))])
        let expected = try cfsctl(["--repo", repo, "image-objects", "my-image"]).split(separator: "\n").map { JSONValue.string(String($0)) }
        #expect(reply["object_ids"] == .array(expected))
        #expect(!expected.isEmpty)
        let error = try service.error("org.composefs.Repository.ImageObjects", [("handle", handle), ("name", .string("refs/does-not-exist"))])
        #expect(error.name == "org.composefs.Repository.NoSuchRef")
        #expect(JSONValue.object(error.parameters)["reference"] == .string("refs/does-not-exist"))

        let id = try cfsctl(["--repo", repo, "compute-id", rootfs]).trimmingCharacters(in: .whitespacesAndNewlines)
        reply = try service.reply("org.composefs.Repository.ListImageRefs", [("handle", handle)])
        guard case let .array(refs)? = reply["images"], refs.count == 1 else { throw Failure("\(reply)") }
        #expect(refs[0]["name"] == .string("my-image"))
        #expect(refs[0]["digest"] == .string(id))

        reply = try service.reply("org.composefs.Repository.Gc", [("handle", handle), ("dry_run", .bool(true)), ("roots", .array([]))])
        #expect(reply["dry_run"] == .bool(true))
        #expect(reply["result"]?["objects_removed"] == .integer(0))
        // Without the ref, everything goes (a dry run first says so, and keeps it).
        try FileManager.default.removeItem(atPath: repo + "/images/refs/my-image")
        reply = try service.reply("org.composefs.Repository.Gc", [("handle", handle), ("dry_run", .bool(true)), ("roots", .array([]))])
        guard case let .integer(removable)? = reply["result"]?["objects_removed"] else { throw Failure("\(reply)") }
        #expect(removable > 0)
        // gc waits for every other opener of the repository: this service's own handle only.
        reply = try service.reply("org.composefs.Repository.Gc", [("handle", handle), ("dry_run", .bool(false)), ("roots", .array([]))])
        #expect(reply["dry_run"] == .bool(false))
        #expect(reply["result"]?["objects_removed"] == .integer(removable))
        if case let .integer(bytes)? = reply["result"]?["objects_bytes"] { #expect(bytes >= 128 * 1024) } else { Issue.record("\(reply)") }
        #expect(reply["result"]?["images_pruned"] == .integer(1))
        #expect(try service.reply("org.composefs.Repository.ListImageRefs", [("handle", handle)])["images"] == .array([]))
    }

    @Test func fsckFindsCorruption() throws {
        let (repo, _) = try repositoryWithImage()
        let service = try VarlinkService()
        let handle = JSONValue.integer(try service.open(repo))
        let object = try cfsctl(["--repo", repo, "image-objects", "my-image"]).split(separator: "\n")[0].split(separator: ":")[1]
        let path = repo + "/objects/" + object.prefix(2) + "/" + object.dropFirst(2)
        chmod(path, 0o644)
        try Data("corrupt".utf8).write(to: URL(fileURLWithPath: path))
        let reply = try service.reply("org.composefs.Repository.Fsck", [("handle", handle)])
        #expect(reply["ok"] == .bool(false))
        #expect(reply["objects_corrupted"] == .integer(1))
        guard case let .array(errors)? = reply["errors"], case let .string(first)? = errors.first else { throw Failure("\(reply)") }
        #expect(first.hasPrefix("fsck: "))
    }

    // MARK: The protocol

    @Test func protocolAndBadRequests() throws {
        let service = try VarlinkService()
        let info = try service.reply("org.varlink.service.GetInfo")
        #expect(info["vendor"] == .string("org.composefs"))
        #expect(info["product"] == .string("cfsctl"))
        #expect(info["url"] == .string("https://github.com/composefs/composefs-rs"))
        #expect(info["interfaces"] == .array(["org.varlink.service", "org.composefs.Repository", "org.composefs.Oci"].map { .string($0) }))
        for interface in ["org.composefs.Repository", "org.composefs.Oci", "org.varlink.service"] {
            guard case let .string(text)? = try service.reply(
                "org.varlink.service.GetInterfaceDescription", [("interface", .string(interface))])["description"]
            else { throw Failure("no description of \(interface)") }
            #expect(text.contains("interface \(interface)\n"))
        }
        let description = try service.reply("org.varlink.service.GetInterfaceDescription", [("interface", .string("org.composefs.Oci"))])
        for method in [
            "ListImages", "Check", "Inspect", "Tag", "Untag", "ComputeId", "Pull", "OciMount", "GetInfo", "HasLayer", "GetLayer", "PutLayer",
            "FinalizeImage",
        ] {
            if case let .string(text)? = description["description"] { #expect(text.contains("method \(method)(")) }
        }
        func expect(_ error: VarlinkError, _ name: String, _ parameter: (String, JSONValue)? = nil) {
            #expect(error.name == name)
            if let parameter { #expect(JSONValue.object(error.parameters)[parameter.0] == parameter.1) }
        }
        expect(
            try service.error("org.varlink.service.GetInterfaceDescription", [("interface", .string("org.example.Nothing"))]),
            "org.varlink.service.InterfaceNotFound", ("interface", .string("org.example.Nothing")))
        expect(try service.error("org.example.Nothing.Method"), "org.varlink.service.InterfaceNotFound", ("interface", .string("org.example.Nothing")))
        expect(
            try service.error("org.composefs.Repository.NoSuchMethod"), "org.varlink.service.MethodNotFound",
            ("method", .string("org.composefs.Repository.NoSuchMethod")))
        // Methods belong to their interface.
        expect(try service.error("org.composefs.Repository.ListImages", [("handle", .integer(1))]), "org.varlink.service.MethodNotFound")
        // Missing, null and mistyped parameters name the parameter.
        expect(try service.error("org.composefs.Repository.Fsck"), "org.varlink.service.InvalidParameter", ("parameter", .string("handle")))
        expect(
            try service.error("org.composefs.Repository.Fsck", [("handle", .string("one"))]), "org.varlink.service.InvalidParameter",
            ("parameter", .string("handle")))
        expect(
            try service.error("org.composefs.Repository.Fsck", [("handle", .integer(-1))]), "org.varlink.service.InvalidParameter",
            ("parameter", .string("handle")))
        expect(
            try service.error("org.composefs.Repository.InitRepository", [("path", .null)]), "org.varlink.service.InvalidParameter",
            ("parameter", .string("path")))
        #expect(try service.reply("org.composefs.Oci.GetInfo")["features"] == .array([.string("splitdirfdstream-v0")]))
    }

    /// Messages sent back to back arrive in one read; the descriptors go with the message
    /// they were sent with, not with the first one read.
    @Test func descriptorsGoWithTheirMessage() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        let sender = VarlinkConnection(socket: FileDescriptor(owning: pair[0], path: "sender"))
        let receiver = VarlinkConnection(socket: FileDescriptor(owning: pair[1], path: "receiver"))
        let passed = try directory(work.url.path)
        try sender.send(Array("{\"a\":1}".utf8))
        try sender.send(Array("{\"b\":2}".utf8), descriptors: [passed.raw, passed.raw])
        try sender.send(Array("{\"c\":3}".utf8))
        try sender.send(Array("{\"d\":4}".utf8), descriptors: [passed.raw])
        var counts: [Int] = []
        for _ in 0..<4 { counts.append(try #require(try receiver.receive()).fileDescriptors.count) }
        #expect(counts == [0, 2, 0, 1])
    }

    /// Raw bytes on a connection: what is not a call gets an error, and the connection goes on.
    @Test func malformedMessages() throws {
        let service = try VarlinkService()
        let connection = try service.connect()
        func roundTrip(_ bytes: [UInt8]) throws -> VarlinkReply {
            try connection.send(bytes)
            guard let message = try connection.receive() else { throw Failure("connection closed after \(bytes.count) bytes") }
            return try VarlinkReply(decoding: message.bytes)
        }
        for (bad, parameter) in [
            ("{not json", ""), ("[1,2]", ""), ("{\"parameters\":{}}", "method"), ("{\"method\":\"NoDots\"}", "method"),
            ("{\"method\":7}", "method"), ("{\"method\":\"org.composefs.Repository.Fsck\",\"parameters\":[]}", "parameters"),
            ("{\"method\":\"org.composefs.Repository.Fsck\",\"more\":\"yes\"}", "more"),
        ] {
            guard case let .error(error) = try roundTrip(Array(bad.utf8)) else { throw Failure("\(bad) was answered") }
            #expect(error.name == "org.varlink.service.InvalidParameter", "\(bad)")
            #expect(JSONValue.object(error.parameters)["parameter"] == .string(parameter), "\(bad)")
        }
        // The same connection still answers calls; a oneway call gets no reply.
        try connection.send(VarlinkCall(method: "org.varlink.service.GetInfo", oneway: true).encoded)
        guard case let .parameters(values, continues) = try roundTrip(VarlinkCall(method: "org.varlink.service.GetInfo").encoded) else {
            throw Failure("GetInfo failed")
        }
        #expect(JSONValue.object(values)["product"] == .string("cfsctl"))
        #expect(continues == nil)
    }

    /// A message past the size limit is answered with an error and ends that connection only;
    /// a client that stops mid-message holds up nobody else.
    @Test func hugeMessagesAndSlowClients() throws {
        let service = try VarlinkService()
        let slow = try service.connect()
        let partial = Array("{\"method\":\"org.varlink.ser".utf8)
        #expect(partial.withUnsafeBytes { write(slow.socket.raw, $0.baseAddress, $0.count) } == partial.count)

        let huge = try service.connect()
        let chunk = [UInt8](repeating: UInt8(ascii: " "), count: 1 << 20)
        var sent = 0
        var answered = false
        // Writes stop once the server has given up on the connection.
        while sent < VarlinkConnection.maximumMessageSize + (2 << 20) {
            let count = chunk.withUnsafeBytes { send(huge.socket.raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { break }
            sent += count
        }
        if let message = try? huge.receive(), case let .error(error) = try VarlinkReply(decoding: message.bytes) {
            #expect(error.name == "org.varlink.service.InvalidParameter")
            answered = true
        }
        #expect(answered)
        #expect(try huge.receive() == nil)

        // Others are served meanwhile, several at once.
        let group = DispatchGroup()
        let products = Mutex<[JSONValue?]>([])
        for _ in 0..<8 {
            DispatchQueue.global().async(group: group) {
                let product = try? service.reply("org.varlink.service.GetInfo")["product"]
                products.withLock { $0.append(product) }
            }
        }
        #expect(group.wait(timeout: .now() + 30) == .success)
        let answers = products.withLock { $0 }
        #expect(answers.count == 8 && answers.allSatisfy { $0 == .string("cfsctl") })
        withExtendedLifetime(slow) {}
    }
}

// MARK: org.composefs.Oci

extension VarlinkTests {
    /// An OCI layout of scripts/make-oci-image.py's test image (python3 only: no zstd layer).
    func ociLayout() throws -> String {
        let layout = work.url.appendingPathComponent("layout").path
        try OCIFixture.makeImage(layout, ["--no-zstd"])
        return "oci:" + layout + ":test"
    }

    static let python = findExecutable("python3") != nil

    func frames(_ replies: [(reply: VarlinkReply, descriptors: [FileDescriptor])]) throws -> [JSONValue] {
        try replies.map { item in
            guard case let .parameters(values, _) = item.reply else { throw Failure("a frame failed: \(item.reply)") }
            return .object(values)
        }
    }

    @Test(.enabled(if: VarlinkTests.python, "python3 builds the OCI test image")) func pullListInspectTagCheck() throws {
        let repo = work.url.appendingPathComponent("repo").path
        _ = try cfsctl(["--repo", repo, "init", "--insecure"])
        let image = try ociLayout()
        let service = try VarlinkService(command: ["oci", "varlink"])
        let handle = JSONValue.integer(try service.open(repo))

        #expect(try service.reply("org.composefs.Oci.ListImages", [("handle", handle)])["images"] == .array([]))
        // Streamed: progress frames that continue (one event each), then `completed`.
        let pull: [(String, JSONValue)] = [
            ("handle", handle), ("image", .string(image)), ("name", .string("myimage:v1")), ("local_fetch", .string("disabled")),
            ("storage_root", .null), ("bootable", .bool(false)),
        ]
        let replies = try service.call("org.composefs.Oci.Pull", pull, more: true)
        let frames = try frames(replies)
        #expect(frames.count > 1)
        for (index, item) in replies.enumerated() {
            guard case let .parameters(_, continues) = item.reply else { continue }
            #expect(continues == (index < replies.count - 1))
        }
        for frame in frames.dropLast() {
            guard case let .object(members) = frame else { continue }
            #expect(members.count == 1 && ["started", "progress", "skipped", "done", "message"].contains(members[0].0), "\(frame)")
        }
        guard let completed = frames.last?["completed"], case let .string(manifestDigest)? = completed["manifest_digest"] else {
            throw Failure("no completed frame: \(frames)")
        }
        #expect(manifestDigest.hasPrefix("sha256:"))
        for key in ["config_digest", "manifest_verity", "config_verity", "stats"] {
            if case let .string(value)? = completed[key] { #expect(!value.isEmpty, "\(key)") } else { Issue.record("\(key) missing: \(completed)") }
        }
        #expect(completed["boot_image"] == .null)

        // Without `more`: one reply. A second pull finds everything stored.
        let again = try service.call("org.composefs.Oci.Pull", pull)
        #expect(again.count == 1)
        if case let .parameters(values, continues) = again[0].reply {
            #expect(continues == nil)
            #expect(JSONValue.object(values)["completed"]?["manifest_digest"] == .string(manifestDigest))
        }

        var reply = try service.reply("org.composefs.Oci.ListImages", [("handle", handle)])
        let cliImages = try JSONValue.parse(Array(try cfsctl(["--repo", repo, "oci", "images", "--json"]).utf8))
        #expect(reply == cliImages)
        guard case let .array(images)? = reply["images"], images.count == 1 else { throw Failure("\(reply)") }
        #expect(images[0]["name"] == .string("myimage:v1"))
        #expect(images[0]["manifest_digest"] == .string(manifestDigest))
        #expect(try service.reply("org.composefs.Oci.ListImages", [("handle", handle), ("filter", .string("nope"))])["images"] == .array([]))
        #expect(try service.reply("org.composefs.Oci.ListImages", [("handle", handle), ("filter", .string("image:"))]) == cliImages)

        reply = try service.reply("org.composefs.Oci.Inspect", [("handle", handle), ("image", .string("myimage:v1"))])
        #expect(reply == (try JSONValue.parse(Array(try cfsctl(["--repo", repo, "oci", "inspect", "myimage:v1"]).utf8))))
        guard case let .string(manifest)? = reply["manifest"] else { throw Failure("\(reply)") }
        #expect(try JSONValue.parse(Array(manifest.utf8))["schemaVersion"] == .integer(2))
        #expect(try service.reply("org.composefs.Oci.Inspect", [("handle", handle), ("image", .string("@" + manifestDigest))]) == reply)
        for missing in ["does-not-exist", "@sha256:" + String(repeating: "0", count: 64)] {
            let error = try service.error("org.composefs.Oci.Inspect", [("handle", handle), ("image", .string(missing))])
            #expect(error.name == "org.composefs.Oci.NoSuchImage")
            #expect(JSONValue.object(error.parameters)["image"] == .string(missing.hasPrefix("@") ? String(missing.dropFirst()) : missing))
        }

        _ = try service.reply(
            "org.composefs.Oci.Tag", [("handle", handle), ("manifest_digest", .string(manifestDigest)), ("name", .string("myimage:latest"))])
        reply = try service.reply("org.composefs.Oci.ListImages", [("handle", handle)])
        if case let .array(tagged)? = reply["images"] {
            #expect(Set(tagged.compactMap { image -> String? in if case let .string(name)? = image["name"] { name } else { nil } })
                == ["myimage:v1", "myimage:latest"])
        }
        _ = try service.reply("org.composefs.Oci.Untag", [("handle", handle), ("name", .string("myimage:v1"))])
        reply = try service.reply("org.composefs.Oci.ListImages", [("handle", handle)])
        if case let .array(left)? = reply["images"] { #expect(left.count == 1 && left[0]["name"] == .string("myimage:latest")) }
        #expect(
            try service.error("org.composefs.Oci.Untag", [("handle", handle), ("name", .string("myimage:v1"))]).name
                == "org.composefs.Oci.InternalError")
        #expect(
            try service.error("org.composefs.Oci.Tag", [("handle", handle), ("manifest_digest", .string("nonsense")), ("name", .string("x"))]).name
                == "org.composefs.Oci.InternalError")

        for (bootable, xattrs) in [(false, JSONValue.null), (true, .string("KeepUserXattrs"))] {
            reply = try service.reply(
                "org.composefs.Oci.ComputeId",
                [("handle", handle), ("image", .string("myimage:latest")), ("verity", .null), ("bootable", .bool(bootable)), ("xattrs", xattrs)])
            let cli = try cfsctl(
                ["--repo", repo, "oci", "compute-id", "myimage:latest"] + (bootable ? ["--bootable", "--xattrs", "keep-user-xattrs"] : []))
            #expect(reply["image_id"] == .string(cli.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        #expect(
            try service.error("org.composefs.Oci.ComputeId", [("handle", handle), ("image", .string("myimage:latest"))]).name
                == "org.varlink.service.InvalidParameter")
        #expect(
            try service.error(
                "org.composefs.Oci.ComputeId",
                [("handle", handle), ("image", .string("myimage:latest")), ("bootable", .bool(false)), ("xattrs", .string("All"))]).name
                == "org.varlink.service.InvalidParameter")

        reply = try service.reply("org.composefs.Oci.Check", [("handle", handle)])
        #expect(reply["ok"] == .bool(true))
        #expect(reply["images_checked"] == .integer(1))
        #expect(reply["images_corrupted"] == .integer(0))
        #expect(reply["errors"] == .array([]))
        #expect(reply["repo"]?["ok"] == .bool(true))
        #expect(reply == (try JSONValue.parse(Array(try cfsctl(["--repo", repo, "oci", "fsck", "--json"]).utf8))))
        reply = try service.reply("org.composefs.Oci.Check", [("handle", handle), ("image", .string("nothing"))])
        #expect(reply["ok"] == .bool(false))

        // Layers by diff_id.
        guard case let .string(config)? = try service.reply("org.composefs.Oci.Inspect", [("handle", handle), ("image", .string("myimage:latest"))])["config"],
            case let .array(diffIDs)? = try JSONValue.parse(Array(config.utf8))["rootfs"]?["diff_ids"], case let .string(diffID)? = diffIDs.first
        else { throw Failure("no diff_ids") }
        reply = try service.reply("org.composefs.Oci.HasLayer", [("handle", handle), ("diff_id", .string(diffID))])
        #expect(reply["present"] == .bool(true))
        if case let .string(verity)? = reply["layer_verity"] { #expect(verity.count == 128) } else { Issue.record("\(reply)") }
        reply = try service.reply("org.composefs.Oci.HasLayer", [("handle", handle), ("diff_id", .string("sha256:" + String(repeating: "0", count: 64)))])
        #expect(reply["present"] == .bool(false))
        #expect(reply["layer_verity"] == .null)
        #expect(
            try service.error("org.composefs.Oci.HasLayer", [("handle", handle), ("diff_id", .string("bad"))]).name == "org.composefs.Oci.InvalidDigest")
    }

    @Test(.enabled(if: VarlinkTests.python, "python3 builds the OCI test image")) func pullErrorsAndBootImages() throws {
        let repo = work.url.appendingPathComponent("repo").path
        _ = try cfsctl(["--repo", repo, "init", "--insecure"])
        let image = try ociLayout()
        let service = try VarlinkService()
        let handle = JSONValue.integer(try service.open(repo))
        func pull(_ extra: [(String, JSONValue)], bootable: Bool = false, source: String? = nil) throws -> [(reply: VarlinkReply, descriptors: [FileDescriptor])] {
            try service.call(
                "org.composefs.Oci.Pull",
                [("handle", handle), ("image", .string(source ?? image)), ("local_fetch", .string("disabled")), ("bootable", .bool(bootable))] + extra,
                more: true)
        }
        func failure(_ replies: [(reply: VarlinkReply, descriptors: [FileDescriptor])]) -> VarlinkError? {
            if case let .error(error)? = replies.last?.reply { return error }
            return nil
        }
        let hex = String(repeating: "a", count: 128)
        #expect(failure(try pull([("expected_digest", .string(hex))]))?.name == "org.composefs.Oci.InvalidRequest")
        #expect(
            failure(try pull([("expected_digest", .string(hex)), ("xattrs", .string("AllowlistOnly"))], bootable: true))?.name
                == "org.composefs.Oci.InvalidRequest")
        #expect(failure(try pull([("expected_digest", .string("xyz"))], bootable: true))?.name == "org.composefs.Oci.InvalidDigest")
        let missing = failure(try pull([], source: "oci:" + work.url.path + "/no-layout"))
        #expect(missing?.name == "org.composefs.Oci.InternalError")
        #expect(try service.reply("org.composefs.Oci.ListImages", [("handle", handle)])["images"] == .array([]))

        // Bootable: the boot image is the one `oci compute-id --bootable` names; an expected digest
        // that matches nothing is BootImageMismatch.
        let frames = try frames(try pull([("name", .string("boot"))], bootable: true))
        guard let completed = frames.last?["completed"] else { throw Failure("\(frames)") }
        let bootID = try cfsctl(["--repo", repo, "oci", "compute-id", "--bootable", "boot"]).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(completed["boot_image"] == .string(bootID))
        #expect(completed["boot_image_mode"] == .string("allowlist-only"))
        #expect(completed["boot_image_format_version"] == .string("V1"))
        let found = try self.frames(try pull([("expected_digest", .string(bootID))], bootable: true)).last?["completed"]
        #expect(found?["boot_image"] == .string(bootID))
        let mismatch = failure(try pull([("expected_digest", .string(hex))], bootable: true))
        #expect(mismatch?.name == "org.composefs.Oci.BootImageMismatch")
        #expect(mismatch.map { JSONValue.object($0.parameters)["expected"] } == .string(hex))
    }
}

// MARK: Mounts, socket activation, varlinkctl

extension VarlinkTests {
    /// Attaches a detached mount descriptor at a new directory, checks `check` there, unmounts.
    func attach(_ mount: FileDescriptor, check: (String) throws -> Void) throws {
        let target = work.url.appendingPathComponent("mnt-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        #expect(cfs_move_mount_to(mount.raw, target) == 0)
        defer { _ = cfs_umount(target, 1) }
        try check(target)
    }

    @Test(.enabled(if: MountEnvironment.canMount)) func mountsAreDescriptors() throws {
        let (repo, rootfs) = try repositoryWithImage()
        let service = try VarlinkService()
        let handle = JSONValue.integer(try service.open(repo))
        let replies = try service.call(
            "org.composefs.Repository.Mount", [("handle", handle), ("name", .string("my-image")), ("options", .object([]))])
        guard replies.count == 1, case let .parameters(values, _) = replies[0].reply, let mount = replies[0].descriptors.first else {
            throw Failure("Mount: \(replies.map(\.reply))")
        }
        #expect(JSONValue.object(values)["fd_index"] == .integer(0))
        try attach(mount) { target in
            #expect(FileManager.default.contents(atPath: target + "/usr/lib/readme.txt") == Data("test fixture\n".utf8))
            #expect(FileManager.default.contents(atPath: target + "/usr/bin/hello")
                == FileManager.default.contents(atPath: rootfs + "/usr/bin/hello"))
        }

        // An overlay: the upper and work directories passed as descriptors, written through.
        let upper = work.url.appendingPathComponent("upper").path
        let workdir = work.url.appendingPathComponent("work").path
        for directory in [upper, workdir] { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
        let upperFD = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        let workFD = open(workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer {
            close(upperFD)
            close(workFD)
        }
        let options: [(String, JSONValue)] = [("overlay", .bool(true)), ("read_write", .bool(true))]
        let overlay = try service.call(
            "org.composefs.Repository.Mount", [("handle", handle), ("name", .string("my-image")), ("options", .object(options))],
            descriptors: [upperFD, workFD])
        guard let writable = overlay.first?.descriptors.first else { throw Failure("overlay Mount: \(overlay.map(\.reply))") }
        try attach(writable) { target in
            try Data("new\n".utf8).write(to: URL(fileURLWithPath: target + "/etc/new-file"))
        }
        #expect(FileManager.default.contents(atPath: upper + "/etc/new-file") == Data("new\n".utf8))

        // The descriptors must fit the options.
        var error = try service.error(
            "org.composefs.Repository.Mount", [("handle", handle), ("name", .string("my-image")), ("options", .object(options))])
        #expect(error.name == "org.composefs.Repository.InvalidSpec")
        error = try service.error("org.composefs.Repository.Mount", [("handle", handle), ("name", .string("nothing")), ("options", .object([]))])
        #expect(error.name == "org.composefs.Repository.InternalError")
        error = try service.error("org.composefs.Repository.Mount", [("handle", handle), ("name", .string("my-image"))])
        #expect(error.name == "org.varlink.service.InvalidParameter")
    }

    @Test(.enabled(if: MountEnvironment.canMount && VarlinkTests.python)) func ociMountIsADescriptor() throws {
        let repo = work.url.appendingPathComponent("repo").path
        _ = try cfsctl(["--repo", repo, "init", "--insecure"])
        let layout = try ociLayout()
        _ = try cfsctl(["--repo", repo, "oci", "pull", layout, "mounted"])
        let service = try VarlinkService()
        let handle = JSONValue.integer(try service.open(repo))
        let replies = try service.call(
            "org.composefs.Oci.OciMount", [("handle", handle), ("image", .string("mounted")), ("bootable", .bool(false)), ("options", .object([]))])
        guard let mount = replies.first?.descriptors.first else { throw Failure("OciMount: \(replies.map(\.reply))") }
        let dumped = try cfsctl(["--repo", repo, "oci", "dump", "mounted"])
        try attach(mount) { target in
            // Every path the image's dumpfile lists is there.
            for line in dumped.split(separator: "\n").prefix(40) {
                let path = String(line.split(separator: " ")[0])
                guard !path.contains("\\") else { continue }
                var info = stat()
                #expect(lstat(target + path, &info) == 0, "\(path)")
            }
        }
        var error = try service.error(
            "org.composefs.Oci.OciMount", [("handle", handle), ("image", .string("nothing")), ("bootable", .bool(false)), ("options", .object([]))])
        #expect(error.name == "org.composefs.Oci.NoSuchImage")
        error = try service.error(
            "org.composefs.Oci.OciMount", [("handle", handle), ("image", .string("mounted")), ("bootable", .bool(true)), ("options", .object([]))])
        #expect(error.name == "org.composefs.Oci.InternalError")
        #expect(JSONValue.object(error.parameters)["message"] == .string("No boot EROFS image linked"))
    }

    static let socketActivate = findExecutable("systemd-socket-activate")

    /// Started with a listening socket on descriptor 3 (no arguments), and with one connection
    /// per process (`--accept`, as `varlinkctl exec:` hands one over).
    @Test(.enabled(if: VarlinkTests.socketActivate != nil, "systemd-socket-activate (systemd) is not installed")) func socketActivation() throws {
        let (repo, _) = try repositoryWithImage()
        let cfsctl = productsDirectory().appendingPathComponent("cfsctl").path
        for launcher in [
            [Self.socketActivate ?? "", "-l", "@SOCKET@", cfsctl], [Self.socketActivate ?? "", "-l", "@SOCKET@", cfsctl, "varlink"],
            [Self.socketActivate ?? "", "-l", "@SOCKET@", "--accept", cfsctl],
        ] {
            let service = try VarlinkService(launcher: launcher)
            // One connection: with --accept, each is served by a process of its own.
            let connection = try service.connect()
            let opened = try connection.call(VarlinkCall(method: "org.composefs.Repository.OpenRepository", parameters: VarlinkParameters([("path", .string(repo))])))
            guard case let .parameters(values, _)? = opened.first?.reply, case let .integer(handle)? = JSONValue.object(values)["handle"] else {
                throw Failure("OpenRepository: \(opened.map(\.reply))")
            }
            #expect(handle >= 1)
            // Repositories are opened with the default flags: an insecure one is recognized as such.
            let fsck = try connection.call(VarlinkCall(method: "org.composefs.Repository.Fsck", parameters: VarlinkParameters([("handle", .integer(handle))])))
            guard case let .parameters(report, _)? = fsck.first?.reply else { throw Failure("Fsck: \(fsck.map(\.reply))") }
            #expect(JSONValue.object(report)["ok"] == .bool(true))
        }
    }

    static let varlinkctl = findExecutable("varlinkctl")

    @Test(.enabled(if: VarlinkTests.varlinkctl != nil, "varlinkctl (systemd 255 or later) is not installed")) func varlinkctlCalls() throws {
        let (repo, _) = try repositoryWithImage()
        let service = try VarlinkService()
        func varlinkctl(_ arguments: [String]) throws -> ProcessResult { try run(Self.varlinkctl ?? "", ["--json=short"] + arguments) }
        let open = try varlinkctl(["call", service.socket, "org.composefs.Repository.OpenRepository", "{\"path\":\"\(repo)\"}"])
        #expect(open.status == 0, "\(open.stderr)")
        guard case let .integer(handle)? = try JSONValue.parse(Array(open.stdout.utf8))["handle"] else { throw Failure(open.stdout) }
        let fsck = try varlinkctl(["call", service.socket, "org.composefs.Repository.Fsck", "{\"handle\":\(handle)}"])
        #expect(try JSONValue.parse(Array(fsck.stdout.utf8))["ok"] == .bool(true))
        let failed = try varlinkctl(["call", service.socket, "org.composefs.Repository.Fsck", "{\"handle\":999}"])
        #expect(failed.status != 0 && failed.stderr.contains("InvalidHandle"))
        let introspect = try varlinkctl(["introspect", service.socket, "org.composefs.Repository"])
        #expect(introspect.status == 0 && introspect.stdout.contains("OpenRepository"), "\(introspect.stderr)")
    }
}

// MARK: Layers between services (splitdirfdstream-v0)

extension VarlinkTests {
    /// An initialized repository (insecure: this kernel may lack fs-verity) at `path`.
    func repository(_ path: String, sha256: Bool = false) throws -> String {
        _ = try cfsctl(["--repo", path] + (sha256 ? ["--hash", "sha256", "init", "--algorithm", "fsverity-sha256-12"] : ["init"]) + ["--insecure"])
        return path
    }

    /// A repository with the OCI test image pulled and tagged `t`.
    func pulledRepository(_ name: String, image: String, sha256: Bool = false) throws -> String {
        let repo = try repository(work.url.appendingPathComponent(name).path, sha256: sha256)
        _ = try cfsctl(["--repo", repo] + (sha256 ? ["--hash", "sha256"] : []) + ["oci", "pull", image, "t"])
        return repo
    }

    /// What a repository stores for OCI images: every oci-* stream and the object it is, the
    /// composefs images, the tags.
    func storedImages(_ repo: String) throws -> [String: String] {
        var entries: [String: String] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: repo + "/streams")) ?? [] where name.hasPrefix("oci-") {
            entries["streams/" + name] = try linkedObject(repo + "/streams/" + name)
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: repo + "/images")) ?? [] where name != "refs" {
            entries["images/" + name] = ""
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: repo + "/streams/refs/oci")) ?? [] {
            entries["tag " + name] = try FileManager.default.destinationOfSymbolicLink(atPath: repo + "/streams/refs/oci/" + name)
        }
        return entries
    }

    /// GetLayer from one service (streamed: several replies, their descriptors concatenated),
    /// PutLayer of the pipe and the directory slots to the other; the lifetime descriptors
    /// are held until then. PutLayer's reply.
    func transferLayer(
        _ diffID: String, from source: VarlinkService, _ sourceHandle: JSONValue, to destination: VarlinkService,
        _ destinationHandle: JSONValue, zerocopy: Bool, more: Bool = true
    ) throws -> JSONValue {
        let replies = try source.call(
            "org.composefs.Oci.GetLayer", [("handle", sourceHandle), ("params", .object([("diff_id", .string(diffID))]))], more: more)
        var descriptors: [FileDescriptor] = []
        var directoryCount: Int?
        for (index, item) in replies.enumerated() {
            guard case let .parameters(values, continues) = item.reply, case let .integer(count)? = JSONValue.object(values)["dir_count"] else {
                throw Failure("GetLayer \(diffID): \(item.reply)")
            }
            #expect(directoryCount == nil || directoryCount == Int(count), "every reply has the same dir_count")
            directoryCount = Int(count)
            #expect(continues == (more ? index < replies.count - 1 : nil))
            #expect(!item.descriptors.isEmpty)
            descriptors += item.descriptors
        }
        let slots = try #require(directoryCount)
        // The pipe, 2 or 3 directory slots, the keepalive pipe and up to 2 more.
        #expect((2...3).contains(slots) && descriptors.count >= 2 + slots && descriptors.count <= 4 + slots, "\(slots), \(descriptors.count)")
        #expect(more ? replies.count >= 3 : replies.count == 1)
        let handedOn = Array(descriptors.prefix(1 + slots))
        let put = try destination.call(
            "org.composefs.Oci.PutLayer", [("handle", destinationHandle), ("diff_id", .string(diffID)), ("zerocopy", .bool(zerocopy))],
            descriptors: handedOn.map(\.raw))
        withExtendedLifetime(descriptors) {}
        guard put.count == 1, case let .parameters(values, _) = put[0].reply else { throw Failure("PutLayer \(diffID): \(put.map(\.reply))") }
        return .object(values)
    }

    /// composefs-rs 0.9's copy_image over the wire: Inspect on the source; for each diff_id
    /// HasLayer on the destination, else GetLayer → PutLayer; then FinalizeImage. Its reply and
    /// the PutLayer replies.
    func copyImage(
        _ image: String, from source: VarlinkService, _ sourceHandle: JSONValue, to destination: VarlinkService,
        _ destinationHandle: JSONValue, name: String?, zerocopy: Bool
    ) throws -> (finalized: JSONValue, puts: [JSONValue]) {
        let inspect = try source.reply("org.composefs.Oci.Inspect", [("handle", sourceHandle), ("image", .string(image))])
        guard case let .string(manifest)? = inspect["manifest"], case let .string(config)? = inspect["config"],
            case let .array(diffIDs)? = try JSONValue.parse(Array(config.utf8))["rootfs"]?["diff_ids"]
        else { throw Failure("Inspect \(image): \(inspect)") }
        var layers: [JSONValue] = []
        var puts: [JSONValue] = []
        for case let .string(diffID) in diffIDs {
            let has = try destination.reply("org.composefs.Oci.HasLayer", [("handle", destinationHandle), ("diff_id", .string(diffID))])
            let verity: JSONValue?
            if has["present"] == .bool(true) {
                verity = has["layer_verity"]
            } else {
                let put = try transferLayer(diffID, from: source, sourceHandle, to: destination, destinationHandle, zerocopy: zerocopy)
                puts.append(put)
                verity = put["layer_verity"]
            }
            layers.append(.object([("diff_id", .string(diffID)), ("layer_verity", try #require(verity))]))
        }
        let finalized = try destination.reply(
            "org.composefs.Oci.FinalizeImage",
            [("handle", destinationHandle), ("manifest_json", .string(manifest)), ("config_json", .string(config)), ("layers", .array(layers)),
             ("name", name.map { .string($0) } ?? .null)])
        return (finalized, puts)
    }

    func count(_ reply: JSONValue, _ key: String) -> Int64 {
        if case let .integer(value)? = reply[key] { return value }
        Issue.record("\(key) missing in \(reply)")
        return -1
    }

    /// Copies between two services, as `cfsctl oci copy` does them: the same streams and image
    /// ids as pulling the image there (and as `cfsctl oci copy`), same and different
    /// algorithms, with and without zerocopy; fsck clean.
    @Test(.enabled(if: VarlinkTests.python, "python3 builds the OCI test image")) func copyBetweenServices() throws {
        let image = try ociLayout()
        let sha512Source = try pulledRepository("source-512", image: image)
        let sha256Source = try pulledRepository("source-256", image: image, sha256: true)
        let pulled512 = try storedImages(sha512Source)
        let sourceService = try VarlinkService()
        let destinationService = try VarlinkService()
        #expect(try destinationService.reply("org.composefs.Oci.GetInfo")["features"] == .array([.string("splitdirfdstream-v0")]))
        let handles = (sha512: JSONValue.integer(try sourceService.open(sha512Source)), sha256: JSONValue.integer(try sourceService.open(sha256Source)))

        for (label, sourceHandle, sourceRepo, zerocopy) in [
            ("sha512 → sha512", handles.sha512, sha512Source, false), ("sha512 → sha512, zerocopy", handles.sha512, sha512Source, true),
            ("sha256 → sha512", handles.sha256, sha256Source, false), ("sha256 → sha512, zerocopy", handles.sha256, sha256Source, true),
        ] {
            let destination = try repository(work.url.appendingPathComponent("copy-\(UUID().uuidString)").path)
            let handle = JSONValue.integer(try destinationService.open(destination))
            let (finalized, puts) = try copyImage("t", from: sourceService, sourceHandle, to: destinationService, handle, name: "c", zerocopy: zerocopy)
            #expect(puts.count == 3, "\(label)")
            for put in puts {
                #expect(put["already_present"] == .bool(false), "\(label)")
                // The same file system, no reflinks (ext4 here): the objects are hard-linked.
                #expect(count(put, "objects_hardlinked") + count(put, "objects_already_present") > 0, "\(label): \(put)")
                #expect(count(put, "objects_copied") == 0 && count(put, "objects_reflinked") == 0, "\(label): \(put)")
            }
            // What a pull there stores, tagged c as well as t.
            var expected = pulled512
            expected["tag c"] = expected["tag t"]
            expected["tag t"] = nil
            #expect(try storedImages(destination) == expected, "\(label)")
            // What `cfsctl oci copy` prints and stores (which refuses zerocopy across algorithms).
            let viaCLI = try repository(work.url.appendingPathComponent("cli-\(UUID().uuidString)").path)
            let cli = try runTool(
                "cfsctl",
                ["--repo", viaCLI, "oci", "copy", "t", "--from", sourceRepo, "--name", "c"] + (zerocopy && sourceRepo == sha512Source ? ["--zerocopy"] : []))
            #expect(cli.status == 0, "\(label): \(cli.stderr)")
            guard case let .string(manifestDigest)? = finalized["manifest_digest"], case let .string(manifestVerity)? = finalized["manifest_verity"],
                case let .string(configDigest)? = finalized["config_digest"], case let .string(configVerity)? = finalized["config_verity"]
            else { throw Failure("FinalizeImage: \(finalized)") }
            #expect(cli.stdout.contains("Manifest digest: \(manifestDigest)\nManifest verity: \(manifestVerity)\n"), "\(label): \(cli.stdout)")
            #expect(cli.stdout.contains("Config digest:   \(configDigest)\nConfig verity:   \(configVerity)\n"), "\(label): \(cli.stdout)")
            #expect(try storedImages(viaCLI) == expected, "\(label)")
            #expect(try runTool("cfsctl", ["--repo", destination, "oci", "fsck"]).status == 0, "\(label)")
            #expect(try runTool("cfsctl", ["--repo", destination, "fsck"]).status == 0, "\(label)")
            #expect(
                try destinationService.reply("org.composefs.Oci.Inspect", [("handle", handle), ("image", .string("c"))])["composefs_erofs"]
                    == (try sourceService.reply("org.composefs.Oci.Inspect", [("handle", handles.sha512), ("image", .string("t"))])["composefs_erofs"]))

            // Again: every layer is there (HasLayer), FinalizeImage changes nothing.
            let again = try copyImage("t", from: sourceService, sourceHandle, to: destinationService, handle, name: "c", zerocopy: zerocopy)
            #expect(again.puts.isEmpty && again.finalized == finalized, "\(label)")
            #expect(try storedImages(destination) == expected, "\(label)")
        }

        // A layer stored already is received again all the same (PutLayer says so).
        let destination = try pulledRepository("again", image: image)
        let handle = JSONValue.integer(try destinationService.open(destination))
        let diffID = try #require(try diffIDs(sha512Source).first)
        for more in [true, false] {
            let put = try transferLayer(diffID, from: sourceService, handles.sha512, to: destinationService, handle, zerocopy: false, more: more)
            #expect(put["already_present"] == .bool(true))
            #expect(put["layer_verity"] == .string(try linkedObject(destination + "/streams/oci-layer-" + diffID)))
        }
    }

    /// Another file system (tmpfs): objects are copied, and with zerocopy nothing can be done,
    /// which fails the layer and tags nothing.
    @Test(.enabled(if: VarlinkTests.python, "python3 builds the OCI test image")) func copyToAnotherFileSystem() throws {
        let image = try ociLayout()
        let source = try pulledRepository("source", image: image)
        let sourceService = try VarlinkService()
        let sourceHandle = JSONValue.integer(try sourceService.open(source))
        let elsewhere = try TemporaryDirectory(in: "/dev/shm")
        let destinationService = try VarlinkService()

        let refused = try repository(elsewhere.url.appendingPathComponent("refused").path)
        let refusedHandle = JSONValue.integer(try destinationService.open(refused))
        let diffID = try #require(try diffIDs(source).last)
        let replies = try sourceService.call(
            "org.composefs.Oci.GetLayer", [("handle", sourceHandle), ("params", .object([("diff_id", .string(diffID))]))], more: true)
        let descriptors = replies.flatMap(\.descriptors)
        guard case let .parameters(values, _)? = replies.last?.reply, case let .integer(slots)? = JSONValue.object(values)["dir_count"] else {
            throw Failure("GetLayer: \(replies.map(\.reply))")
        }
        let put = try destinationService.call(
            "org.composefs.Oci.PutLayer", [("handle", refusedHandle), ("diff_id", .string(diffID)), ("zerocopy", .bool(true))],
            descriptors: descriptors.prefix(1 + Int(slots)).map(\.raw))
        guard case let .error(error)? = put.first?.reply else { throw Failure("zerocopy PutLayer across file systems: \(put.map(\.reply))") }
        #expect(error.name == "org.composefs.Oci.InternalError")
        if case let .string(message)? = JSONValue.object(error.parameters)["message"] {
            #expect(message.contains("reflink and hardlink both failed; copy fallback is disabled (zerocopy mode)"), "\(message)")
        }
        #expect(try destinationService.reply("org.composefs.Oci.HasLayer", [("handle", refusedHandle), ("diff_id", .string(diffID))])["present"] == .bool(false))
        withExtendedLifetime(descriptors) {}

        let copied = try repository(elsewhere.url.appendingPathComponent("copied").path)
        let copiedHandle = JSONValue.integer(try destinationService.open(copied))
        let (_, puts) = try copyImage("t", from: sourceService, sourceHandle, to: destinationService, copiedHandle, name: "c", zerocopy: false)
        #expect(puts.contains { count($0, "objects_copied") > 0 }, "\(puts)")
        #expect(puts.allSatisfy { count($0, "objects_hardlinked") == 0 && count($0, "objects_reflinked") == 0 }, "\(puts)")
        var expected = try storedImages(source)
        expected["tag c"] = expected.removeValue(forKey: "tag t")
        #expect(try storedImages(copied) == expected)
        #expect(try runTool("cfsctl", ["--repo", copied, "oci", "fsck"]).status == 0)
    }

    func diffIDs(_ repo: String) throws -> [String] {
        guard case let .array(ids)? = try JSONValue.parse(Array(try cfsctl(["--repo", repo, "oci", "inspect", "--config", "t"]).utf8))["rootfs"]?["diff_ids"] else {
            throw Failure("no diff_ids in \(repo)")
        }
        return ids.compactMap { if case let .string(id) = $0 { id } else { nil } }
    }
}

// MARK: Refusing bad layer transfers

extension VarlinkTests {
    /// A pipe holding `bytes` (at most a pipe's buffer), its write end closed.
    func pipe(holding bytes: [UInt8]) throws -> FileDescriptor {
        var ends: [Int32] = [-1, -1]
        guard Glibc.pipe(&ends) == 0 else { throw Failure("pipe: \(errno)") }
        let written = bytes.withUnsafeBytes { write(ends[1], $0.baseAddress, $0.count) }
        close(ends[1])
        guard written == bytes.count else { throw Failure("wrote \(written) of \(bytes.count) bytes to a pipe") }
        return FileDescriptor(owning: ends[0], path: "pipe")
    }

    func directory(_ path: String) throws -> FileDescriptor {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure("open \(path): \(errno)") }
        return FileDescriptor(owning: fd, path: path)
    }

    static func chunk(_ type: UInt8, _ body: [UInt8]) -> [UInt8] {
        [type] + withUnsafeBytes(of: UInt32(body.count).littleEndian, Array.init) + body
    }

    static func fileChunk(_ directory: UInt32, _ length: UInt64, _ name: [UInt8]) -> [UInt8] {
        [2] + withUnsafeBytes(of: length.littleEndian, Array.init) + withUnsafeBytes(of: directory.littleEndian, Array.init)
            + withUnsafeBytes(of: UInt32(name.count).littleEndian, Array.init) + name
    }

    static func diffID(_ bytes: [UInt8]) -> String { "sha256:" + hex(SHA256.hash(data: bytes)) }

    /// PutLayer with descriptors and streams that do not fit, hostile file references, and
    /// layer bytes that are not the diff_id's: each refused with its error, nothing stored.
    @Test func putLayerRefusesBadInput() throws {
        let repo = try repository(work.url.appendingPathComponent("repo").path)
        let service = try VarlinkService()
        let handle = JSONValue.integer(try service.open(repo))
        // Files for FileBackedData chunks, and what must stay out of reach.
        let files = work.url.appendingPathComponent("files").path
        try FileManager.default.createDirectory(atPath: files + "/sub", withIntermediateDirectories: true)
        let content = [UInt8]((0..<1000).map { UInt8($0 % 251) })
        try Data(content).write(to: URL(fileURLWithPath: files + "/big"))
        try Data("small\n".utf8).write(to: URL(fileURLWithPath: files + "/small"))
        let secret = work.url.appendingPathComponent("secret").path
        try Data(repeating: 7, count: 500).write(to: URL(fileURLWithPath: secret))
        try FileManager.default.createSymbolicLink(atPath: files + "/escape", withDestinationPath: secret)
        let filesFD = try directory(files)
        let header = [UInt8](repeating: UInt8(ascii: "h"), count: 512)
        let layer = header + content + [UInt8](repeating: 0, count: 24) + Array("small\n".utf8)
        let good = Self.chunk(0, header) + Self.fileChunk(0, 1000, Array("big".utf8)) + Self.chunk(0, [UInt8](repeating: 0, count: 24))
            + Self.fileChunk(0, 6, Array("small".utf8))

        func putLayer(_ stream: [UInt8]?, diffID: String, directories: [FileDescriptor], handle: JSONValue = handle) throws -> VarlinkReply {
            let pipe = try stream.map { try self.pipe(holding: $0) }
            let descriptors = (pipe.map { [$0] } ?? []) + directories
            let replies = try service.call(
                "org.composefs.Oci.PutLayer", [("handle", handle), ("diff_id", .string(diffID)), ("zerocopy", .bool(false))],
                descriptors: descriptors.map(\.raw))
            withExtendedLifetime(descriptors) {}
            return try #require(replies.first?.reply)
        }
        func refused(_ reply: VarlinkReply, _ name: String, _ message: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
            guard case let .error(error) = reply else {
                Issue.record("accepted: \(reply)", sourceLocation: sourceLocation)
                return
            }
            #expect(error.name == name, "\(error)", sourceLocation: sourceLocation)
            if let message {
                let text = JSONValue.object(error.parameters)["message"].flatMap { if case let .string(text) = $0 { text } else { nil } } ?? ""
                #expect(text.contains(message), "\(text)", sourceLocation: sourceLocation)
            }
        }
        let diffID = Self.diffID(layer)

        // Descriptors: the pipe and at least one directory.
        refused(try putLayer(nil, diffID: diffID, directories: []), "org.composefs.Oci.InvalidRequest", "expected at least 2 fds (1 pipe + >=1 dir fd), got 0")
        refused(try putLayer(good, diffID: diffID, directories: []), "org.composefs.Oci.InvalidRequest", "got 1")
        refused(try putLayer(good, diffID: "sha256:nothex", directories: [filesFD]), "org.composefs.Oci.InvalidDigest")
        refused(
            try putLayer(good, diffID: "sha512:" + String(repeating: "0", count: 128), directories: [filesFD]), "org.composefs.Oci.InternalError",
            "only sha256 is supported")
        refused(
            try putLayer(good, diffID: diffID, directories: [filesFD], handle: .integer(999)), "org.composefs.Oci.InvalidHandle")
        let devNull = FileDescriptor(owning: open("/dev/null", O_RDONLY | O_CLOEXEC), path: "/dev/null")
        // A directory where the pipe goes.
        refused(try putLayer(nil, diffID: diffID, directories: [filesFD, filesFD]), "org.composefs.Oci.InternalError", "Is a directory")

        // Streams that break the format, and references that may not be followed.
        for (stream, directories, message) in [
            ([7] + good, [filesFD], "unknown chunk type byte 0x07"),
            (Array(Self.chunk(0, header).dropLast(10)), [filesFD], "truncated chunk"),
            ([0, 1, 2], [filesFD], "truncated chunk"),
            ([0] + withUnsafeBytes(of: UInt32(300 << 20).littleEndian, Array.init), [filesFD], "exceeds maximum"),
            (Self.fileChunk(0, 1, []), [filesFD], "empty filename"),
            ([2] + [UInt8](repeating: 0, count: 12) + withUnsafeBytes(of: UInt32(5000).littleEndian, Array.init), [filesFD], "filename length 5000"),
            (Self.fileChunk(3, 1000, Array("big".utf8)), [filesFD], "directory index out of range"),
            (Self.fileChunk(0, 1000, Array("../files/big".utf8)), [filesFD], "`..` component"),
            (Self.fileChunk(0, 1000, Array(files.utf8) + Array("/big".utf8)), [filesFD], "absolute path"),
            (Self.fileChunk(0, 500, Array("escape".utf8)), [filesFD], "cannot open"),
            (Self.fileChunk(0, 1000, [0x62, 0xFF]), [filesFD], "non-UTF-8 filename"),
            (Self.fileChunk(0, 999, Array("big".utf8)), [filesFD], "declared length 999 != actual size 1000"),
            (Self.fileChunk(0, 4096, Array("sub".utf8)), [filesFD], "not a regular file"),
            (Self.fileChunk(1, 1000, Array("big".utf8)), [filesFD, devNull], "is not a directory"),
        ] {
            refused(try putLayer(stream, diffID: diffID, directories: directories), "org.composefs.Oci.InternalError", message)
        }
        // The whole stream, but not the layer the diff_id names: refused, nothing kept.
        let other = Self.diffID(Array("another layer".utf8))
        let mismatch = try putLayer(good, diffID: other, directories: [filesFD])
        refused(mismatch, "org.composefs.Oci.DiffIdMismatch")
        if case let .error(error) = mismatch {
            #expect(JSONValue.object(error.parameters)["expected"] == .string(other))
            #expect(JSONValue.object(error.parameters)["actual"] == .string(diffID))
        }
        #expect(try service.reply("org.composefs.Oci.HasLayer", [("handle", handle), ("diff_id", .string(other))])["present"] == .bool(false))
        #expect(try storedImages(repo).isEmpty)

        // The same stream under its own diff_id is a layer (PutLayer does not read the tar).
        let accepted = try putLayer(good, diffID: diffID, directories: [filesFD])
        guard case let .parameters(values, _) = accepted else { throw Failure("\(accepted)") }
        let reply = JSONValue.object(values)
        #expect(reply["already_present"] == .bool(false))
        // Its object was hard-linked in by the refused attempt already (left for gc, as
        // composefs-rs leaves it).
        #expect(count(reply, "objects_already_present") == 1 && count(reply, "objects_copied") == 0, "\(reply)")
        #expect(reply["layer_verity"] == .string(try linkedObject(repo + "/streams/oci-layer-" + diffID)))
        #expect(try run("/bin/sh", ["-c", "'\(productsDirectory().path)/cfsctl' --repo '\(repo)' cat oci-layer-\(diffID) | sha256sum"]).stdout.hasPrefix(String(diffID.dropFirst(7))))
        // Content that arrives inline (InlineData) is stored too; over 64 bytes as an object.
        let inline = Self.chunk(0, header) + Self.chunk(1, content) + Self.chunk(1, [])
        let inlineReply = try putLayer(inline, diffID: Self.diffID(header + content), directories: [filesFD])
        guard case let .parameters(inlineValues, _) = inlineReply else { throw Failure("\(inlineReply)") }
        #expect(count(.object(inlineValues), "objects_already_present") == 1)
        withExtendedLifetime(filesFD) {}
    }

    /// GetLayer and FinalizeImage refuse what they cannot serve or record, before storing
    /// anything.
    @Test(.enabled(if: VarlinkTests.python, "python3 builds the OCI test image")) func getLayerAndFinalizeImageRefuseBadInput() throws {
        let image = try ociLayout()
        let source = try pulledRepository("source", image: image)
        let service = try VarlinkService()
        let sourceHandle = JSONValue.integer(try service.open(source))
        func getLayer(_ params: [(String, JSONValue)], handle: JSONValue = .null) throws -> VarlinkError? {
            let replies = try service.call(
                "org.composefs.Oci.GetLayer", [("handle", handle == .null ? sourceHandle : handle), ("params", .object(params))], more: true)
            if case let .error(error)? = replies.last?.reply { return error }
            return nil
        }
        #expect(try getLayer([])?.name == "org.composefs.Oci.InvalidRequest")
        #expect(try getLayer([("diff_id", .string("sha256:xyz"))])?.name == "org.composefs.Oci.InvalidDigest")
        let absent = "sha256:" + String(repeating: "1", count: 64)
        let missing = try getLayer([("diff_id", .string(absent))])
        #expect(missing?.name == "org.composefs.Oci.NoSuchLayer")
        #expect(missing.map { JSONValue.object($0.parameters)["diff_id"] } == .string(absent))
        #expect(try getLayer([("diff_id", .string(absent))], handle: .integer(4242))?.name == "org.composefs.Oci.InvalidHandle")
        #expect(try service.error("org.composefs.Oci.GetLayer", [("handle", sourceHandle)]).name == "org.varlink.service.InvalidParameter")

        // The layers copied, then FinalizeImage given what does not fit them.
        let destination = try repository(work.url.appendingPathComponent("destination").path)
        let handle = JSONValue.integer(try service.open(destination))
        let inspect = try service.reply("org.composefs.Oci.Inspect", [("handle", sourceHandle), ("image", .string("t"))])
        guard case let .string(manifest)? = inspect["manifest"], case let .string(config)? = inspect["config"] else { throw Failure("\(inspect)") }
        var layers: [(String, JSONValue)] = []
        for diffID in try diffIDs(source) {
            let put = try transferLayer(diffID, from: service, sourceHandle, to: service, handle, zerocopy: false)
            layers.append((diffID, try #require(put["layer_verity"])))
        }
        let storedLayers = try storedImages(destination)
        #expect(storedLayers.count == 3)
        func finalize(manifest: String = manifest, config: String = config, _ layers: [(String, JSONValue)]) throws -> VarlinkReply {
            let replies = try service.call(
                "org.composefs.Oci.FinalizeImage",
                [("handle", handle), ("manifest_json", .string(manifest)), ("config_json", .string(config)),
                 ("layers", .array(layers.map { .object([("diff_id", .string($0.0)), ("layer_verity", $0.1)]) })), ("name", .string("n"))])
            return try #require(replies.first?.reply)
        }
        func errorName(_ reply: VarlinkReply) -> String? {
            if case let .error(error) = reply { return error.name }
            return nil
        }
        #expect(errorName(try finalize([(layers[0].0, .string("zz"))] + layers.dropFirst())) == "org.composefs.Oci.InvalidDigest")
        #expect(errorName(try finalize([("sha256:short", layers[0].1)] + layers.dropFirst())) == "org.composefs.Oci.InvalidDigest")
        // A layer left out; two layers' streams swapped; a config the manifest does not name;
        // documents that are not JSON.
        for bad in [
            try finalize(Array(layers.dropLast())),
            try finalize([(layers[0].0, layers[1].1), (layers[1].0, layers[0].1), layers[2]]),
            try finalize(config: config + " ", layers),
            try finalize(manifest: "not json", layers),
        ] {
            #expect(errorName(bad) == "org.composefs.Oci.InternalError", "\(bad)")
        }
        #expect(try storedImages(destination) == storedLayers, "nothing written, nothing tagged")
        guard case .parameters = try finalize(layers) else { throw Failure("FinalizeImage refused the image") }
        #expect(try storedImages(destination)["tag n"] != nil)
    }
}

// MARK: Pull progress

extension VarlinkTests {
    /// The frames of a streamed pull before `completed`.
    func pullFrames(_ service: VarlinkService, _ handle: JSONValue, _ image: String) throws -> [JSONValue] {
        let replies = try service.call(
            "org.composefs.Oci.Pull",
            [("handle", handle), ("image", .string(image)), ("name", .string("t")), ("local_fetch", .string("disabled")), ("bootable", .bool(false))],
            more: true)
        let all = try frames(replies)
        guard all.last?["completed"] != nil else { throw Failure("no completed frame: \(all)") }
        return Array(all.dropLast())
    }

    /// The single event of each frame, with its value.
    func events(_ frames: [JSONValue]) -> [(String, JSONValue)] {
        frames.compactMap { frame in
            guard case let .object(members) = frame, members.count == 1 else {
                Issue.record("not one event: \(frame)")
                return nil
            }
            return members[0]
        }
    }

    /// For each layer, in order: started (its blob's size, in bytes), progress up to that
    /// size, done; composefs-rs 0.9's words for the rest.
    func checkLayerEvents(_ events: [(String, JSONValue)], layers: [(diffID: String, size: Int64)]) {
        for layer in layers {
            let mine = events.filter { $0.1["id"] == .string(layer.diffID) }
            guard mine.count >= 2 else {
                Issue.record("layer \(layer.diffID): \(mine)")
                continue
            }
            #expect(mine.first?.0 == "started" && mine.last?.0 == "done", "\(mine.map(\.0))")
            #expect(mine.first?.1["total"] == .integer(layer.size))
            #expect(mine.first?.1["unit"] == .string("Bytes"))
            #expect(mine.last?.1["transferred"] == .integer(layer.size))
            var last: Int64 = 0
            for progress in mine.dropFirst().dropLast() {
                #expect(progress.0 == "progress" && progress.1["total"] == .integer(layer.size))
                if case let .integer(fetched)? = progress.1["fetched"] {
                    #expect(fetched > last && fetched <= layer.size)
                    last = fetched
                }
            }
        }
    }

    /// Pull called with `more` reports each layer as composefs-rs 0.9 does, from an OCI layout
    /// directory (which composefs-rs reads itself) and from an archive (through skopeo there),
    /// and layers found stored.
    @Test(.enabled(if: VarlinkTests.python, "python3 builds the OCI test image")) func pullReportsEachLayer() throws {
        let image = try ociLayout()
        let service = try VarlinkService()
        let handle = JSONValue.integer(try service.open(try repository(work.url.appendingPathComponent("repo").path)))
        var events = self.events(try pullFrames(service, handle, image))
        let inspect = try service.reply("org.composefs.Oci.Inspect", [("handle", handle), ("image", .string("t"))])
        guard case let .string(manifestText)? = inspect["manifest"], case let .string(configText)? = inspect["config"],
            case let .array(blobs)? = try JSONValue.parse(Array(manifestText.utf8))["layers"],
            case let .array(ids)? = try JSONValue.parse(Array(configText.utf8))["rootfs"]?["diff_ids"],
            case let .string(configDigest)? = try JSONValue.parse(Array(manifestText.utf8))["config"]?["digest"]
        else { throw Failure("\(inspect)") }
        let manifestDigest = "sha256:" + hex(SHA256.hash(data: Array(manifestText.utf8)))
        var layers: [(diffID: String, size: Int64)] = []
        for (blob, id) in zip(blobs, ids) {
            guard case let .integer(size)? = blob["size"], case let .string(diffID) = id else { throw Failure("\(blob)") }
            layers.append((diffID, size))
        }
        #expect(layers.count == 3)
        #expect(events.first?.0 == "message" && events.first?.1 == .string("Importing 3 layers from OCI layout"))
        #expect(events.last?.0 == "message" && events.last?.1 == .string("Storing manifest"))
        #expect(events.filter { $0.0 == "message" }.count == 2, "\(events.map(\.0))")
        checkLayerEvents(events, layers: layers)
        // Again: every layer skipped, in the config's order.
        events = self.events(try pullFrames(service, handle, image))
        #expect(events.map(\.0) == ["message", "skipped", "skipped", "skipped", "message"])
        #expect(events.dropFirst().prefix(3).map { $0.1["id"] } == layers.map { .string($0.diffID) })

        // An OCI archive: composefs-rs pulls it through skopeo, which words it otherwise.
        let archive = work.url.appendingPathComponent("image.tar").path
        let layout = String(image.dropFirst(4).dropLast(5))
        #expect(try run("/bin/tar", ["-cf", archive, "-C", layout, "."]).status == 0)
        let other = JSONValue.integer(try service.open(try repository(work.url.appendingPathComponent("repo-archive").path)))
        events = self.events(try pullFrames(service, other, "oci-archive:\(archive):test"))
        #expect(events.first?.1 == .string("Fetching config \(configDigest)"))
        #expect(events.last?.1 == .string("Storing manifest \(manifestDigest)"))
        #expect(events.filter { $0.0 == "message" }.count == 2, "\(events.map(\.0))")
        checkLayerEvents(events, layers: layers)
        events = self.events(try pullFrames(service, other, "oci-archive:\(archive):test"))
        #expect(events.map(\.1) == [.string("Already have container config \(configDigest)"), .string("Already have manifest \(manifestDigest)")])
    }
}
