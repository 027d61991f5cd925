// Registries, through the OCI distribution API (GET /v2/NAME/manifests/REF and
// /v2/NAME/blobs/DIGEST): anonymous or bearer-token auth (with basic credentials from --creds or
// the usual auth files), plain HTTP for localhost or --tls-verify=false, and blobs downloaded
// into unnamed temporary files with resumption (Range) when a connection drops.

import AsyncHTTPClient
import ComposeFSBase
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public struct RegistryOptions: Sendable {
    /// "USER:PASSWORD".
    public var credentials: String?
    public var authFile: String?
    /// nil: verify TLS except for localhost; false: never verify, and allow plain HTTP.
    public var tlsVerify: Bool?
    /// Where downloaded blobs are staged (a directory on the repository's file system).
    public var stagingDirectory: String
    /// Download attempts per blob (a dropped connection resumes where it stopped).
    public var attempts = 4

    public init(credentials: String? = nil, authFile: String? = nil, tlsVerify: Bool? = nil, stagingDirectory: String) {
        self.credentials = credentials
        self.authFile = authFile
        self.tlsVerify = tlsVerify
        self.stagingDirectory = stagingDirectory
    }
}

/// HOST[:PORT]/NAME[:TAG|@DIGEST], with Docker Hub's shorthands.
package struct RegistryReference: Sendable {
    var host: String
    var repository: String
    /// A tag or a digest.
    var reference: String
    var digest: Digest?

    package init(parsing text: String) throws(OCIError) {
        var rest = text
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            digest = try Digest(parsing: String(rest[rest.index(after: at)...]))
            rest = String(rest[..<at])
        }
        var tag = "latest"
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = String(rest[..<colon])
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !components.isEmpty, !components.contains(where: \.isEmpty) else {
            throw .badReference(text, reason: "expected HOST/NAME[:TAG|@DIGEST]")
        }
        let first = components[0]
        if components.count > 1 && (first.contains(".") || first.contains(":") || first == "localhost") {
            host = first
            components.removeFirst()
        } else {
            host = "docker.io"
        }
        if host == "docker.io" && components.count == 1 { components.insert("library", at: 0) }
        repository = components.joined(separator: "/")
        let nameCharacters = Set("abcdefghijklmnopqrstuvwxyz0123456789._-/")
        guard repository.allSatisfy({ nameCharacters.contains($0) }) else {
            throw .badReference(text, reason: "repository names are lowercase letters, digits and . _ - /")
        }
        let tagCharacters = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        guard !tag.isEmpty, tag.count <= 128, tag.allSatisfy({ tagCharacters.contains($0) }) else {
            throw .badReference(text, reason: "invalid tag '\(tag)'")
        }
        self.digest = digest
        reference = digest?.description ?? tag
    }

    /// Docker Hub's API lives on another host than its name.
    var apiHost: String { host == "docker.io" ? "registry-1.docker.io" : host }

    var isLocal: Bool {
        let name = host.split(separator: ":").first.map(String.init) ?? host
        return name == "localhost" || name == "127.0.0.1" || name == "[::1]"
    }
}

package final class RegistrySource: ImageSource, @unchecked Sendable {
    private let target: RegistryReference
    private let options: RegistryOptions
    private let client: HTTPClient
    private let state = Mutex<State>(State())

    private struct State {
        var baseURL: String?
        var authorization: String?
    }

    init(reference: String, options: RegistryOptions) throws(OCIError) {
        target = try RegistryReference(parsing: reference)
        self.options = options
        let verify = options.tlsVerify ?? !target.isLocal
        var configuration = HTTPClient.Configuration(
            certificateVerification: verify ? .fullVerification : .none,
            redirectConfiguration: .follow(max: 8, allowCycles: false),
            timeout: .init(connect: .seconds(30), read: .seconds(60)))
        configuration.httpVersion = .http1Only
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    deinit {
        try? client.syncShutdown()
    }

    private var name: String { "\(target.host)/\(target.repository)" }

    package var stagesBlobs: Bool { true }

    // MARK: ImageSource

    package func rootDocument() async throws(OCIError) -> (bytes: [UInt8], mediaType: String?, pinned: Digest?) {
        let (bytes, mediaType) = try await fetchManifest(target.reference)
        return (bytes, mediaType, target.digest)
    }

    package func manifest(_ descriptor: Descriptor) async throws(OCIError) -> [UInt8] {
        try await fetchManifest(descriptor.digest.description).bytes
    }

    package func blob(_ descriptor: Descriptor, progress: (@Sendable (UInt64) -> Void)?) async throws(OCIError) -> BlobFile {
        let what = "blob \(descriptor.digest) of \(name)"
        let staging = try systemCall { () throws(SystemError) in
            try FileDescriptor.openUnnamed(in: try FileDescriptor.open(options.stagingDirectory, O_RDONLY | O_DIRECTORY), mode: 0o600)
        }
        let fd = staging.raw
        let file = BlobFile(file: staging, path: what, offset: 0, length: UInt64(descriptor.size))
        var written: UInt64 = 0
        var lastError: OCIError?
        for _ in 0..<options.attempts {
            do throws(OCIError) {
                try await download(descriptor, into: fd, from: &written, what: what, progress: progress)
                guard written == UInt64(descriptor.size) else {
                    throw .transfer(what: what, reason: "got \(written) bytes, the descriptor says \(descriptor.size)")
                }
                return file
            } catch let error {
                lastError = error
                // Only a connection that broke is worth another attempt.
                guard case .transfer = error, written < UInt64(descriptor.size) else { throw error }
            }
        }
        throw lastError ?? .transfer(what: what, reason: "download failed")
    }

    // MARK: HTTP

    private func fetchManifest(_ reference: String) async throws(OCIError) -> (bytes: [UInt8], mediaType: String?) {
        let what = "manifest \(reference) of \(name)"
        let response = try await request("/v2/\(target.repository)/manifests/\(reference)", what: what,
            accept: MediaType.acceptedManifests.joined(separator: ", "))
        guard response.status == .ok else { throw await failure(response, what: what) }
        let bytes = try await collect(response, limit: DocumentLimits.manifestMax, what: what)
        let contentType = response.headers.first(name: "Content-Type")?.split(separator: ";").first.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        return (bytes, contentType)
    }

    private func download(
        _ descriptor: Descriptor, into fd: Int32, from written: inout UInt64, what: String,
        progress: (@Sendable (UInt64) -> Void)?
    ) async throws(OCIError) {
        let range = written > 0 ? "bytes=\(written)-" : nil
        let response = try await request("/v2/\(target.repository)/blobs/\(descriptor.digest)", what: what, range: range)
        switch response.status {
        case .ok:
            // A server that ignores Range starts over.
            if written > 0 {
                guard ftruncate(fd, 0) == 0 else { throw .system(SystemError("truncate", path: what)) }
                written = 0
            }
        case .partialContent:
            break
        default:
            throw await failure(response, what: what)
        }
        do {
            for try await buffer in response.body {
                let count = UInt64(buffer.readableBytes)
                guard written + count <= UInt64(descriptor.size) else {
                    throw OCIError.badDocument(what: what, reason: "more data than the descriptor's \(descriptor.size) bytes")
                }
                try buffer.withUnsafeReadableBytes { (bytes) throws(OCIError) in
                    try systemCall { () throws(SystemError) in try pwriteAll(fd, bytes, at: written, path: what) }
                }
                written += count
                progress?(count)
            }
        } catch let error as OCIError {
            throw error
        } catch {
            throw .transfer(what: what, reason: "connection failed after \(written) bytes: \(error)")
        }
    }

    /// One GET, authenticating when the registry asks to, and finding out whether it speaks
    /// HTTPS or (where allowed) plain HTTP.
    private func request(_ path: String, what: String, accept: String? = nil, range: String? = nil) async throws(OCIError) -> HTTPClientResponse {
        let base = try await baseURL(what: what)
        var request = HTTPClientRequest(url: base + path)
        if let accept { request.headers.add(name: "Accept", value: accept) }
        if let range { request.headers.add(name: "Range", value: range) }
        if let authorization = state.withLock({ $0.authorization }) {
            request.headers.add(name: "Authorization", value: authorization)
        }
        var response = try await execute(request, what: what)
        if response.status == .unauthorized, let challenge = response.headers.first(name: "WWW-Authenticate") {
            _ = try? await response.body.collect(upTo: 1 << 16)
            let (authorization, user) = try await authenticate(challenge, what: what)
            state.withLock { $0.authorization = authorization }
            request.headers.replaceOrAdd(name: "Authorization", value: authorization)
            response = try await execute(request, what: what)
            if response.status == .unauthorized {
                let advice = user.map { "the registry refused the credentials of '\($0)'" } ?? Self.credentialsWanted
                throw .transfer(what: what, reason: "\(advice); \(await statusDetail(response))")
            }
        }
        return response
    }

    private func execute(_ request: HTTPClientRequest, what: String) async throws(OCIError) -> HTTPClientResponse {
        do {
            return try await client.execute(request, timeout: .seconds(300))
        } catch {
            throw .transfer(what: what, reason: "\(error)")
        }
    }

    private func baseURL(what: String) async throws(OCIError) -> String {
        if let known = state.withLock({ $0.baseURL }) { return known }
        let host = target.apiHost
        let insecureAllowed = options.tlsVerify == false || target.isLocal
        // Plain HTTP is tried first where allowed: an HTTPS server answers it at once with an
        // error, while a TLS handshake with a plain server is retried until the timeout.
        let candidates = (insecureAllowed ? ["http://\(host)"] : []) + ["https://\(host)"]
        var lastError = ""
        for candidate in candidates {
            do {
                let response = try await client.execute(HTTPClientRequest(url: candidate + "/v2/"), timeout: .seconds(30))
                _ = try? await response.body.collect(upTo: 1 << 20)
                // A registry answers 200, or 401 when it wants credentials.
                guard response.status == .ok || response.status == .unauthorized else {
                    lastError = "\(candidate)/v2/ answered \(response.status.code)"
                    continue
                }
                state.withLock { $0.baseURL = candidate }
                return candidate
            } catch {
                lastError = "\(error)"
            }
        }
        throw .transfer(what: what, reason: "cannot reach \(host): \(lastError)")
    }

    static let credentialsWanted = "the registry wants credentials (use --creds USER:PASSWORD or an auth file)"

    /// Answers a 401 challenge: a bearer token from the realm (with basic credentials when
    /// known), or basic credentials directly.
    /// Returns the Authorization header value and the user name it carries, if any.
    private func authenticate(_ challenge: String, what: String) async throws(OCIError) -> (String, user: String?) {
        let (scheme, parameters) = Self.parseChallenge(challenge)
        var credentials = options.credentials
        if credentials == nil { credentials = try Self.storedCredentials(host: target.host, authFile: options.authFile) }
        let basic = credentials.map { "Basic " + Data($0.utf8).base64EncodedString() }
        let user = credentials.map { String($0.prefix { $0 != ":" }) }
        switch scheme.lowercased() {
        case "basic":
            guard let basic else { throw .transfer(what: what, reason: Self.credentialsWanted) }
            return (basic, user)
        case "bearer":
            guard let realm = parameters["realm"], var components = URLComponents(string: realm) else {
                throw .transfer(what: what, reason: "bearer challenge without a realm")
            }
            var query = components.queryItems ?? []
            if let service = parameters["service"] { query.append(URLQueryItem(name: "service", value: service)) }
            query.append(URLQueryItem(name: "scope", value: parameters["scope"] ?? "repository:\(target.repository):pull"))
            components.queryItems = query
            guard let url = components.string else { throw .transfer(what: what, reason: "bad token realm '\(realm)'") }
            var request = HTTPClientRequest(url: url)
            if let basic { request.headers.add(name: "Authorization", value: basic) }
            let response = try await execute(request, what: "token for \(what)")
            guard response.status == .ok else {
                guard response.status == .unauthorized, let user else { throw await failure(response, what: "token for \(what)") }
                throw .transfer(
                    what: what, reason: "the token service refused the credentials of '\(user)'; \(await statusDetail(response))")
            }
            let body = try await collect(response, limit: 1 << 20, what: "token for \(what)")
            struct Token: Decodable {
                var token: String?
                var access_token: String?
            }
            let token = try Documents.decode(Token.self, body, what: "token for \(what)")
            guard let value = token.token ?? token.access_token else {
                throw .transfer(what: what, reason: "the token service sent no token")
            }
            return ("Bearer " + value, user)
        default:
            throw .unsupported("\(what): unsupported authentication scheme '\(scheme)'")
        }
    }

    /// `Bearer realm="…",service="…",scope="…"`.
    package static func parseChallenge(_ header: String) -> (scheme: String, parameters: [String: String]) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard let space = trimmed.firstIndex(of: " ") else { return (trimmed, [:]) }
        var parameters: [String: String] = [:]
        var rest = Substring(trimmed[trimmed.index(after: space)...])
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let character = rest.first, character != "\"" {
                    if character == "\\", let next = rest.dropFirst().first {
                        value.append(next)
                        rest = rest.dropFirst(2)
                    } else {
                        value.append(character)
                        rest = rest.dropFirst()
                    }
                }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = String(rest[..<end]).trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            parameters[key] = value
        }
        return (String(trimmed[..<space]), parameters)
    }

    /// USER:PASSWORD for `host` from the first auth file that has it: the one given, then
    /// $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json.
    static func storedCredentials(host: String, authFile: String?) throws(OCIError) -> String? {
        let environment = ProcessInfo.processInfo.environment
        var files: [String] = []
        if let authFile { files.append(authFile) }
        if let file = environment["REGISTRY_AUTH_FILE"] { files.append(file) }
        if let runtime = environment["XDG_RUNTIME_DIR"] { files.append(runtime + "/containers/auth.json") }
        if let home = environment["HOME"] { files.append(home + "/.docker/config.json") }
        struct AuthFile: Decodable {
            struct Entry: Decodable { var auth: String? }
            var auths: [String: Entry]?
        }
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                if file == authFile { throw .notFound("auth file \(file)") }
                continue
            }
            let parsed = try Documents.decode(AuthFile.self, Array(data), what: file)
            let keys = host == "docker.io" ? ["docker.io", "https://index.docker.io/v1/", "index.docker.io"] : [host, "https://" + host]
            for key in keys {
                if let auth = parsed.auths?[key]?.auth, let decoded = Data(base64Encoded: auth) {
                    return String(decoding: decoded, as: UTF8.self)
                }
            }
        }
        return nil
    }

    private func collect(_ response: HTTPClientResponse, limit: Int, what: String) async throws(OCIError) -> [UInt8] {
        do {
            let buffer = try await response.body.collect(upTo: limit)
            return Array(buffer.readableBytesView)
        } catch {
            throw .transfer(what: what, reason: "reading the response: \(error)")
        }
    }

    private func failure(_ response: HTTPClientResponse, what: String) async -> OCIError {
        if response.status == .notFound { return .notFound("\(what) (registry answered 404)") }
        return .transfer(what: what, reason: await statusDetail(response))
    }

    /// "registry answered CODE REASON: BODY" (the body cut short).
    private func statusDetail(_ response: HTTPClientResponse) async -> String {
        let body = (try? await response.body.collect(upTo: 1 << 16)).map { String(buffer: $0) } ?? ""
        let detail = body.isEmpty ? "" : ": " + body.prefix(300).trimmingCharacters(in: .whitespacesAndNewlines)
        return "registry answered \(response.status.code) \(response.status.reasonPhrase)\(detail)"
    }
}
