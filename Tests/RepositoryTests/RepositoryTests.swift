// The repository as a library: objects, images and their refs, stream refs, gc, fsck and
// the repository lock, on scratch repositories (no fs-verity needed).

import ComposeFS
import EROFS
import Foundation
import FsVerity
import TestSupport
import Testing

@testable import Repository

/// An image whose two large files are backed by objects stored in `repository`; returns the
/// image bytes and the objects.
private func backedImage(in repository: Repository, contents: [String]) throws -> (image: [UInt8], objects: [ObjectID]) {
    let root = Inode(mode: FileMode.directory | 0o755)
    var objects: [ObjectID] = []
    for (i, text) in contents.enumerated() {
        let bytes = Array(String(repeating: text, count: 100).utf8)
        let id = try repository.ensureObject(bytes)
        let file = Inode(mode: FileMode.regular | 0o644)
        file.size = UInt64(bytes.count)
        file.digest = id
        file.payload = Array(id.objectPath.utf8)
        try root.addEntry(Array("file\(i)".utf8), file)
        objects.append(id)
    }
    return (try ImageWriter.image(root: root), objects)
}

private func exists(_ repository: Repository, _ relative: String) -> Bool {
    var info = stat()
    return lstat(repository.path + "/" + relative, &info) == 0
}

@Suite struct RepositoryTests {
    @Test func objectsAreStoredOnceUnderTheirDigest() throws {
        let scratch = try ScratchRepository()
        let repository = scratch.repository
        let bytes = Array("some content".utf8)
        let first = try repository.storeObject(bytes)
        let second = try repository.storeObject(bytes)
        #expect(!first.existed && second.existed && first.id == second.id)
        #expect(first.id == FsVerity.digest(of: bytes, algorithm: .sha256))
        #expect(exists(repository, "objects/" + first.id.objectPath))
        #expect(try repository.readObject(first.id) == bytes)
        // Written in pieces, the same content is the same object.
        let writer = try ObjectWriter(repository: repository)
        for piece in [bytes[..<4], bytes[4...]] { try Array(piece).withUnsafeBytes { try writer.write($0) } }
        let pieces = try writer.finish()
        #expect(pieces.id == first.id && pieces.existed)
    }

    @Test func imagesAreNamedByDigestAndByRef() throws {
        let scratch = try ScratchRepository()
        let repository = scratch.repository
        let (image, objects) = try backedImage(in: repository, contents: ["a", "b"])
        let id = try repository.writeImage(image, name: "app/v1")
        #expect(exists(repository, "images/" + id.hex) && exists(repository, "images/refs/app/v1"))
        for name in [id.hex, "refs/app/v1"] {
            #expect(Set(try repository.imageObjects(name)) == Set(objects))
        }
        let opened = try repository.openImage(id.hex)
        #expect(opened.id == id && !opened.verified)  // nothing vouches for it without fs-verity
        #expect(throws: RepositoryError.self) { try repository.openImage("not-hex") }
        #expect(throws: RepositoryError.self) { try repository.openImage(String(repeating: "0", count: 64)) }
        for bad in ["", "a//b", "../x", "a/./b", "a/"] {
            #expect(throws: RepositoryError.self, "\(bad)") { try repository.writeImage(image, name: bad) }
        }
    }

    @Test func streamRefsAreListedAndRemoved() throws {
        let scratch = try ScratchRepository()
        let repository = scratch.repository
        var writer = SplitStreamWriter(algorithm: .sha256, contentType: 0)
        writer.writeInline(Array("stream".utf8))
        let id = try repository.writeStream(try writer.finish(), name: "my-stream")
        try repository.setStreamRef("tags/one", to: "my-stream")
        try repository.setStreamRef("tags/two", to: "my-stream")
        #expect(repository.streamID("my-stream") == id && repository.streamID("refs/tags/one") == id)
        #expect(try repository.streamRefs(in: "tags").map(\.ref).sorted() == ["one", "two"])
        try repository.removeStreamRef("tags/one")
        #expect(try repository.streamRefs(in: "tags").map(\.ref) == ["two"])
        #expect(throws: RepositoryError.self) { try repository.removeStreamRef("tags/one") }
        #expect(throws: RepositoryError.self) { try repository.writeStream([], name: "a/b") }
    }

    @Test func gcKeepsWhatRefsReachAndRemovesTheRest() throws {
        let scratch = try ScratchRepository()
        let repository = scratch.repository
        let (keptImage, keptObjects) = try backedImage(in: repository, contents: ["k1", "k2"])
        let (droppedImage, droppedObjects) = try backedImage(in: repository, contents: ["d1"])
        let rootedImage = try backedImage(in: repository, contents: ["r1"])
        let kept = try repository.writeImage(keptImage, name: "kept")
        let dropped = try repository.writeImage(droppedImage, name: nil)
        let rooted = try repository.writeImage(rootedImage.image, name: nil)
        // A stream kept by a ref keeps the object it refers to.
        let streamObject = try repository.ensureObject(Array(repeating: 9, count: 5000))
        var writer = SplitStreamWriter(algorithm: .sha256, contentType: 0)
        writer.writeExternal(streamObject, size: 5000)
        try repository.writeStream(try writer.finish(), name: "layer", ref: "layers/one")
        let loose = try repository.ensureObject(Array("loose".utf8))

        let dryRun = try repository.collectGarbage(roots: [rooted.hex], dryRun: true)
        #expect(dryRun.objectsRemoved == 3)  // the dropped image, its object, the loose one
        #expect(exists(repository, "objects/" + loose.objectPath))
        let result = try repository.collectGarbage(roots: [rooted.hex], dryRun: false)
        #expect(result.objectsRemoved == 3 && result.imagesPruned == 1)
        for id in keptObjects + rootedImage.objects + [kept, rooted, streamObject] {
            #expect(exists(repository, "objects/" + id.objectPath))
        }
        for id in droppedObjects + [dropped, loose] { #expect(!exists(repository, "objects/" + id.objectPath)) }
        #expect(!exists(repository, "images/" + dropped.hex))
        #expect(try repository.fsck().ok)
    }

    @Test func fsckFindsAndRepairsDamage() throws {
        let scratch = try ScratchRepository()
        let repository = scratch.repository
        let (image, objects) = try backedImage(in: repository, contents: ["x", "y"])
        try repository.writeImage(image, name: "img")
        #expect(try repository.fsck().ok)

        // A changed object, a missing one, a stray file and a ref pointing nowhere.
        let changed = repository.path + "/objects/" + objects[0].objectPath
        try Data("changed".utf8).write(to: URL(fileURLWithPath: changed))
        try FileManager.default.removeItem(atPath: repository.path + "/objects/" + objects[1].objectPath)
        try Data().write(to: URL(fileURLWithPath: repository.path + "/objects/" + String(objects[0].objectPath.prefix(2)) + "/stray"))
        try FileManager.default.createSymbolicLink(atPath: repository.path + "/images/refs/gone", withDestinationPath: "../nothing")

        let report = try repository.fsck()
        #expect(!report.ok)
        #expect(Set(report.errors.map(\.type)) == ["object-digest-mismatch", "object-invalid-name", "image-missing-object", "broken-symlink"])
        #expect(report.objectsCorrupted == 2 && report.missingObjects == 1 && report.brokenLinks == 1)
        let repair = try repository.fsck(repair: true)
        #expect(Set(repair.repaired) == ["objects/" + objects[0].objectPath, "objects/" + objects[0].objectPath.prefix(2) + "/stray", "images/refs/gone"])
        // What cannot be repaired by removal (the image's missing objects) is still reported.
        #expect(Set(try repository.fsck().errors.map(\.type)) == ["image-missing-object"])
    }

    @Test func exclusiveLockWaitsForSharedHolders() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cfs-lock-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try Repository.initialize(at: path, algorithm: .sha256, insecure: true)
        var holder: Repository? = try Repository(path: path)
        let waiter = try Repository(path: path)
        let locked = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            try? waiter.lockExclusive()
            locked.signal()
        }
        // The kernel lists a blocked flock of this process once the waiter is waiting.
        func blocked() -> Bool {
            let locks = (try? String(contentsOfFile: "/proc/locks", encoding: .utf8)) ?? ""
            return locks.split(separator: "\n").contains { $0.contains("-> FLOCK") && $0.contains(" \(getpid()) ") }
        }
        for _ in 0..<500 where !blocked() { usleep(10_000) }
        #expect(blocked(), "the exclusive lock does not wait for the shared one")
        withExtendedLifetime(holder) {}
        holder = nil
        #expect(locked.wait(timeout: .now() + 10) == .success, "the exclusive lock is not granted once the holder is gone")
    }

    @Test func openingRefusesWhatItCannotUse() throws {
        let scratch = try ScratchRepository()
        try Data("{\"version\": 1, \"algorithm\": \"fsverity-sha256-12\", \"features\": {\"incompatible\": [\"future\"]}}".utf8)
            .write(to: URL(fileURLWithPath: scratch.path + "/meta.json"))
        #expect(throws: RepositoryError.self) { try Repository(path: scratch.path) }
        try Data("not json".utf8).write(to: URL(fileURLWithPath: scratch.path + "/meta.json"))
        #expect(throws: RepositoryError.self) { try Repository(path: scratch.path) }
        #expect(throws: RepositoryError.self) { try Repository(path: scratch.path + "/missing") }
        let metadata = RepositoryMetadata(algorithm: .sha512)
        #expect(try RepositoryMetadata(decoding: metadata.encoded()) == metadata)
    }
}
