import ComposeFSBase
import Foundation
import FsVerity
import Testing

@Suite struct KnownVectorTests {
    /// Vectors from the composefs documentation (`echo ... > file; fsverity digest file`).
    @Test(arguments: [
        ("hello world\n", "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"),
        ("foo bar baz\n", "91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b"),
    ])
    func composefsVectors(content: String, expected: String) {
        #expect(FsVerity.digest(of: Array(content.utf8)).hex == expected)
    }

    @Test func digestSizes() {
        for algorithm in FsVerityAlgorithm.allCases {
            #expect(FsVerity.digest(of: [1, 2, 3], algorithm: algorithm).bytes.count == algorithm.digestSize)
        }
        #expect(FsVerityAlgorithm.sha256.name == "sha256")
        #expect(FsVerityAlgorithm.sha512.name == "sha512")
    }
}

@Suite struct StreamingTests {
    @Test(arguments: [1, 7, 4095, 100_000])
    func chunkedUpdatesMatchOneShot(chunkSize: Int) {
        // Single bytes are slow in debug builds; a smaller input still crosses block boundaries.
        let count = chunkSize == 1 ? 3 * 4096 + 17 : 2 * 4096 * 128 + 4097
        let data = pseudoRandomBytes(count: count, seed: 42)
        for configuration in Configuration.all {
            var hasher = FsVerityHasher(algorithm: configuration.algorithm, blockSize: configuration.blockSize)
            var offset = 0
            while offset < data.count {
                let end = min(offset + chunkSize, data.count)
                hasher.update(Array(data[offset..<end]))
                offset = end
            }
            let oneShot = FsVerity.digest(
                of: data, algorithm: configuration.algorithm, blockSize: configuration.blockSize)
            #expect(hasher.finalize() == oneShot, "\(configuration.testDescription)")
        }
    }

    @Test func emptyUpdatesAreIgnored() {
        var hasher = FsVerityHasher()
        hasher.update([])
        hasher.update([1, 2, 3])
        hasher.update(UnsafeRawBufferPointer(start: nil, count: 0))
        #expect(hasher.finalize() == FsVerity.digest(of: [1, 2, 3]))
    }

    @Test func copiedHasherIsIndependent() {
        var first = FsVerityHasher()
        first.update([UInt8](repeating: 7, count: 5000))
        var second = first
        second.update([1])
        #expect(first.finalize() == FsVerity.digest(of: [UInt8](repeating: 7, count: 5000)))
        #expect(second.finalize() == FsVerity.digest(of: [UInt8](repeating: 7, count: 5000) + [1]))
    }
}

@Suite(.enabled(if: ReferenceTool.isAvailable, "/usr/bin/fsverity (fsverity-utils) is not installed"))
struct ReferenceToolTests {
    static let maximumSize = 9 * 1024 * 1024

    /// Sizes around block and tree-level boundaries (2*4096*128 is two level-1 blocks at
    /// 4 KiB/SHA-256), plus the boundaries of each configuration's own tree levels, as far
    /// as they are small enough to write quickly (larger ones use sparse files below).
    static func sizes(for configuration: Configuration) -> [Int] {
        let bs = configuration.blockSize
        var sizes = [0, 1, 4095, 4096, 4097, 2 * 4096 * 128 - 1, 2 * 4096 * 128, 2 * 4096 * 128 + 1,
                     5 * 1024 * 1024 + 123]
        var levelSpan = bs  // data bytes covered by one block of the current level
        while levelSpan < maximumSize {
            sizes += [levelSpan - 1, levelSpan, levelSpan + 1, 2 * levelSpan + 1]
            levelSpan *= configuration.fanout
        }
        return Set(sizes).filter { $0 <= maximumSize }.sorted()
    }

    @Test(arguments: Configuration.all)
    func matchesReference(configuration: Configuration) throws {
        let directory = try TemporaryDirectory()
        let data = pseudoRandomBytes(count: Self.maximumSize, seed: UInt64(configuration.blockSize))
        for size in Self.sizes(for: configuration) {
            let path = try directory.write("data-\(size)", Array(data[..<size]))
            let expected = try ReferenceTool.digest(
                path, algorithm: configuration.algorithm, blockSize: configuration.blockSize)
            let fromFile = try withOpenFile(path) {
                try FsVerity.digest(
                    fileDescriptor: $0, algorithm: configuration.algorithm, blockSize: configuration.blockSize)
            }
            let inMemory = data.withUnsafeBytes {
                FsVerity.digest(
                    of: UnsafeRawBufferPointer(rebasing: $0[..<size]),
                    algorithm: configuration.algorithm, blockSize: configuration.blockSize)
            }
            #expect(fromFile == expected, "size \(size)")
            #expect(inMemory == expected, "size \(size)")
        }
    }

    /// A sparse file over 130 MiB (cheap on disk, not block aligned): a 3-level tree at
    /// 4 KiB/SHA-256 and 5 levels at 1 KiB/SHA-512. Also checks the threaded digest on it.
    @Test(arguments: Configuration.all)
    func largeSparseFile(configuration: Configuration) throws {
        let directory = try TemporaryDirectory()
        let size = 136 * 1024 * 1024 + 12345
        let path = try directory.writeSparse("sparse", size: size, patches: [
            (offset: 70 * 1024 * 1024 + 3, bytes: Array("in the middle".utf8)),
            (offset: size - 5, bytes: [1, 2, 3, 4, 5]),
        ])
        let expected = try ReferenceTool.digest(
            path, algorithm: configuration.algorithm, blockSize: configuration.blockSize)
        let (single, threaded) = try withOpenFile(path) { fd in
            try (FsVerity.digest(
                    fileDescriptor: fd, algorithm: configuration.algorithm, blockSize: configuration.blockSize),
                 FsVerity.digest(
                    fileDescriptor: fd, algorithm: configuration.algorithm, blockSize: configuration.blockSize,
                    threads: 4))
        }
        #expect(single == expected)
        #expect(threaded == expected)
    }

    /// Exactly one level-2 block at 4 KiB/SHA-256 (64 MiB) and one byte more.
    @Test(arguments: [4096 * 128 * 128, 4096 * 128 * 128 + 1])
    func levelTwoBoundary(size: Int) throws {
        let directory = try TemporaryDirectory()
        let path = try directory.writeSparse("sparse", size: size, patches: [(offset: size - 1, bytes: [0xAA])])
        let expected = try ReferenceTool.digest(path, algorithm: .sha256, blockSize: 4096)
        #expect(try withOpenFile(path) { try FsVerity.digest(fileDescriptor: $0) } == expected)
    }
}

@Suite struct FileDigestTests {
    @Test(arguments: [2, 4, 64])
    func threadedMatchesSingleThreaded(threads: Int) throws {
        let directory = try TemporaryDirectory()
        // Three whole 4 MiB chunks plus a tail that is not a multiple of the block size.
        let data = pseudoRandomBytes(count: 3 * 4 * 1024 * 1024 + 1234, seed: 7)
        let path = try directory.write("data", data)
        try withOpenFile(path) { fd in
            for configuration in Configuration.all {
                let single = try FsVerity.digest(
                    fileDescriptor: fd, algorithm: configuration.algorithm, blockSize: configuration.blockSize)
                let threaded = try FsVerity.digest(
                    fileDescriptor: fd, algorithm: configuration.algorithm,
                    blockSize: configuration.blockSize, threads: threads)
                #expect(threaded == single, "\(configuration.testDescription)")
                #expect(single == FsVerity.digest(
                    of: data, algorithm: configuration.algorithm, blockSize: configuration.blockSize))
            }
        }
    }

    @Test func threadedSmallFileFallsBack() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("small", Array("hello world\n".utf8))
        let digest = try withOpenFile(path) { try FsVerity.digest(fileDescriptor: $0, threads: 8) }
        #expect(digest.hex == "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92")
    }

    @Test func emptyFile() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("empty", [])
        #expect(try withOpenFile(path) { try FsVerity.digest(fileDescriptor: $0) } == FsVerity.digest(of: []))
    }

    @Test func doesNotMoveFileOffset() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("data", pseudoRandomBytes(count: 10_000, seed: 1))
        try withOpenFile(path) { fd in
            #expect(lseek(fd, 123, SEEK_SET) == 123)
            _ = try FsVerity.digest(fileDescriptor: fd)
            #expect(lseek(fd, 0, SEEK_CUR) == 123)
        }
    }

    @Test func readErrorIsReported() throws {
        let directory = try TemporaryDirectory()
        try withOpenFile(directory.path) { fd in
            #expect(throws: FsVerityError.io(EISDIR)) { try FsVerity.digest(fileDescriptor: fd) }
            #expect(throws: FsVerityError.io(EBADF)) { try FsVerity.digest(fileDescriptor: -1) }
        }
    }
}

@Suite struct KernelTests {
    /// This machine may lack fs-verity: enabling must then fail with exactly `.notSupported`.
    @Test func enableSucceedsOrIsNotSupported() throws {
        let directory = try TemporaryDirectory()
        let data = pseudoRandomBytes(count: 10_000, seed: 3)
        let path = try directory.write("data", data)
        // The kernel refuses to enable verity while the file is open for writing.
        try withOpenFile(path) { fd in
            do throws(FsVerityError) {
                try FsVerity.enable(fileDescriptor: fd)
                let measured = try FsVerity.measure(fileDescriptor: fd)
                #expect(measured.algorithm == .sha256)
                #expect(measured == FsVerity.digest(of: data))
                #expect(throws: FsVerityError.alreadyEnabled) { try FsVerity.enable(fileDescriptor: fd) }
            } catch {
                #expect(error == .notSupported)
            }
        }
    }

    @Test func measureWithoutVerity() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("data", [1, 2, 3])
        try withOpenFile(path) { fd in
            do throws(FsVerityError) {
                _ = try FsVerity.measure(fileDescriptor: fd)
                Issue.record("measure succeeded on a file without fs-verity")
            } catch {
                #expect(error == .notEnabled || error == .notSupported)
            }
        }
    }

    @Test(arguments: FsVerityAlgorithm.allCases)
    func measureOrComputeFallsBack(algorithm: FsVerityAlgorithm) throws {
        let directory = try TemporaryDirectory()
        let data = Array("hello world\n".utf8)
        let path = try directory.write("data", data)
        let digest = try withOpenFile(path) {
            try FsVerity.measureOrCompute(fileDescriptor: $0, algorithm: algorithm)
        }
        #expect(digest == FsVerity.digest(of: data, algorithm: algorithm))
    }
}

@Suite struct HexAndErrorTests {
    @Test func roundTrip() {
        let bytes: [UInt8] = [0x00, 0x01, 0x7f, 0x80, 0xab, 0xff]
        #expect(Hex.encode(bytes) == "00017f80abff")
        #expect(Hex.decode("00017f80abff") == bytes)
        #expect(Hex.decode("00017F80ABFF") == bytes)
        #expect(Hex.decode("") == [])
        #expect(Hex.encode([]) == "")
    }

    @Test(arguments: ["0", "abc", "zz", "0g", " 00", "éé"])
    func invalidHex(input: String) {
        #expect(Hex.decode(input) == nil)
    }

    @Test func errorDescriptions() {
        #expect(FsVerityError.notSupported.description == "fs-verity is not supported on this file system")
        #expect(FsVerityError.io(ENOENT).description == "I/O error: No such file or directory")
        #expect(FsVerityError.wrongAlgorithm(expected: .sha256, actual: 2).description.contains("sha256"))
    }
}
