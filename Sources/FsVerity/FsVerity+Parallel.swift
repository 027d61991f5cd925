import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

extension FsVerity {
    /// Bytes each worker reads and hashes per round. A multiple of every valid block size,
    /// so chunks always hold whole data blocks.
    static let parallelChunkSize = 4 << 20

    /// Digest of a whole open file like `digest(fileDescriptor:algorithm:blockSize:)`, hashing
    /// the data blocks on up to `threads` threads (capped at the number of online CPUs).
    ///
    /// Workers read and hash disjoint chunks into level 1 of the tree; the calling thread then
    /// appends those hashes in order and builds the (1/fanout as large) upper levels, so the
    /// result is identical to the single-threaded digest. Memory is bounded per round.
    public static func digest(
        fileDescriptor fd: Int32, algorithm: FsVerityAlgorithm = .sha256, blockSize: Int = 4096,
        threads: Int
    ) throws(FsVerityError) -> ObjectID {
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw .io(errno) }
        let chunkSize = parallelChunkSize
        let wholeChunksEnd = Int(status.st_size) / chunkSize * chunkSize
        let workers = min(threads, onlineCPUCount, wholeChunksEnd / chunkSize)
        guard workers > 1 else {
            return try digest(fileDescriptor: fd, algorithm: algorithm, blockSize: blockSize)
        }

        var hasher = FsVerityHasher(algorithm: algorithm, blockSize: blockSize)
        let buffers = WorkerBuffers(
            workers: workers, chunkSize: chunkSize,
            hashesPerChunk: chunkSize / blockSize * algorithm.digestSize)
        defer { buffers.deallocate() }

        var offset = 0
        while offset < wholeChunksEnd {
            let count = min(workers, (wholeChunksEnd - offset) / chunkSize)
            let roundOffset = offset
            DispatchQueue.concurrentPerform(iterations: count) { index in
                let chunk = buffers.chunk(index)
                do throws(FsVerityError) {
                    try readFully(fd, into: chunk, offset: roundOffset + index * chunkSize)
                    hashDataBlocks(UnsafeRawBufferPointer(chunk), algorithm: algorithm,
                                   blockSize: blockSize, into: buffers.hashes(index))
                    buffers.errors[index] = 0
                } catch {
                    buffers.errors[index] = error.errorCode
                }
            }
            if let failure = buffers.errors[..<count].first(where: { $0 != 0 }) {
                throw .io(failure)
            }
            hasher.appendDataBlockHashes(buffers.hashes(upTo: count), dataBytes: count * chunkSize)
            offset += count * chunkSize
        }
        // The partial chunk at the end (and anything appended since fstat).
        try hashFile(fd, from: offset, into: &hasher, buffer: buffers.chunk(0))
        return hasher.finalize()
    }

    private static var onlineCPUCount: Int {
        max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }

    /// Fills `buffer` completely from `offset`; the file shrinking underneath is an I/O error.
    private static func readFully(
        _ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int
    ) throws(FsVerityError) {
        var done = 0
        while done < buffer.count {
            let count = try readAt(
                fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), offset: offset + done)
            guard count > 0 else { throw .io(EIO) }
            done += count
        }
    }

    /// Level 1 of the tree for whole data blocks: one digest per block, in order.
    private static func hashDataBlocks(
        _ data: UnsafeRawBufferPointer, algorithm: FsVerityAlgorithm, blockSize: Int,
        into hashes: UnsafeMutableRawBufferPointer
    ) {
        switch algorithm {
        case .sha256: hashDataBlocks(SHA256Block.self, data, blockSize: blockSize, into: hashes)
        case .sha512: hashDataBlocks(SHA512Block.self, data, blockSize: blockSize, into: hashes)
        }
    }

    private static func hashDataBlocks<H: BlockHash>(
        _: H.Type, _ data: UnsafeRawBufferPointer, blockSize: Int,
        into hashes: UnsafeMutableRawBufferPointer
    ) {
        let digestSize = H.digestSize
        for block in 0..<data.count / blockSize {
            H.hash(
                UnsafeRawBufferPointer(rebasing: data[block * blockSize..<(block + 1) * blockSize]),
                into: UnsafeMutableRawBufferPointer(
                    rebasing: hashes[block * digestSize..<(block + 1) * digestSize]))
        }
    }
}

/// Per-worker read buffers, level-1 hash outputs and error slots of one parallel digest.
/// Unchecked Sendable: during a round each worker touches only the slices of its own index,
/// and the calling thread reads them only after `concurrentPerform` has returned.
private struct WorkerBuffers: @unchecked Sendable {
    let chunkSize: Int
    let hashesPerChunk: Int
    let data: UnsafeMutableRawBufferPointer
    let hashOutput: UnsafeMutableRawBufferPointer
    let errors: UnsafeMutableBufferPointer<Int32>

    init(workers: Int, chunkSize: Int, hashesPerChunk: Int) {
        self.chunkSize = chunkSize
        self.hashesPerChunk = hashesPerChunk
        data = .allocate(byteCount: workers * chunkSize, alignment: 4096)
        hashOutput = .allocate(byteCount: workers * hashesPerChunk, alignment: 64)
        errors = .allocate(capacity: workers)
    }

    func deallocate() {
        data.deallocate()
        hashOutput.deallocate()
        errors.deallocate()
    }

    func chunk(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: data[index * chunkSize..<(index + 1) * chunkSize])
    }

    func hashes(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(
            rebasing: hashOutput[index * hashesPerChunk..<(index + 1) * hashesPerChunk])
    }

    /// The hashes of the first `count` chunks, in file order.
    func hashes(upTo count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: hashOutput[..<(count * hashesPerChunk)])
    }
}

extension FsVerityError {
    /// errno for propagating failures out of worker threads.
    fileprivate var errorCode: Int32 {
        if case let .io(code) = self { code } else { EIO }
    }
}
