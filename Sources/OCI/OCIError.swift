// Errors of OCI image handling. Each names what was being read (a blob, a layer entry, a
// source) and why it was refused.

import ComposeFS
import ComposeFSBase
import Repository
import SELinux

public enum OCIError: Error, CustomStringConvertible {
    /// A tar layer that is malformed or hostile; `entry` is the member's path when known.
    case badTar(layer: String, entry: String?, reason: String)
    /// Content whose digest is not the one its descriptor promised.
    case digestMismatch(what: String, expected: String, actual: String)
    /// A manifest, index or config that does not parse or breaks the OCI rules.
    case badDocument(what: String, reason: String)
    /// A source reference or transport that cannot be used.
    case badReference(String, reason: String)
    case notFound(String)
    /// The registry (or other source) failed to deliver.
    case transfer(what: String, reason: String)
    case unsupported(String)
    /// The merged layers are not a root file system composefs can make an image of.
    case rootfs(image: String, reason: String)
    /// A bootable image's SELinux policy could not be applied.
    case selinux(SELinuxError)
    case system(SystemError)
    case repository(RepositoryError)

    public var description: String {
        switch self {
        case let .badTar(layer, entry, reason):
            if let entry { return "layer \(layer): entry '\(entry)': \(reason)" }
            return "layer \(layer): \(reason)"
        case let .digestMismatch(what, expected, actual):
            return "\(what): digest mismatch: expected \(expected), got \(actual)"
        case let .badDocument(what, reason):
            return "\(what): \(reason)"
        case let .badReference(reference, reason):
            return "invalid image reference '\(reference)': \(reason)"
        case let .notFound(what):
            return "\(what) not found"
        case let .transfer(what, reason):
            return "fetching \(what): \(reason)"
        case let .unsupported(what):
            return what
        case let .rootfs(image, reason):
            return "image \(image): \(reason)"
        case let .selinux(error):
            return error.description
        case let .system(error):
            return error.description
        case let .repository(error):
            return error.description
        }
    }
}

/// Runs repository work, its failure an OCI error.
@inline(__always)
func repositoryCall<T>(_ body: () throws(RepositoryError) -> T) throws(OCIError) -> T {
    do { return try body() } catch { throw .repository(error) }
}

/// Runs a system operation, its failure an OCI error.
@inline(__always)
func systemCall<T>(_ body: () throws(SystemError) -> T) throws(OCIError) -> T {
    do { return try body() } catch { throw .system(error) }
}
