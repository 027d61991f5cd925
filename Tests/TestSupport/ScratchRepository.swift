import Foundation
import Repository

/// A SHA-256 repository without fs-verity in a scratch directory, removed with the value.
public final class ScratchRepository {
    public let path = FileManager.default.temporaryDirectory.appendingPathComponent("cfs-repo-\(UUID().uuidString)").path
    public let repository: Repository

    public init() throws {
        _ = try Repository.initialize(at: path, algorithm: .sha256, insecure: true)
        repository = try Repository(path: path)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
