
/// Streaming fs-verity file digest, computed exactly like the kernel's `FS_IOC_MEASURE_VERITY`
/// (no salt): a Merkle tree over `blockSize`-byte blocks, whose root hash goes into a 256-byte
/// `fsverity_descriptor` that is hashed once more.
///
/// Memory stays constant for any input size: only one pending block per tree level is kept.
/// Full data blocks are hashed straight from the caller's buffer as soon as they are complete,
/// and a hash block is hashed into the level above as soon as it fills up.
public struct FsVerityHasher: Sendable {
    public let algorithm: FsVerityAlgorithm
    public let blockSize: Int

    /// Bytes consumed so far. Because full blocks are hashed eagerly, exactly
    /// `dataSize % blockSize` bytes wait in the level-0 block.
    private var dataSize: UInt64 = 0
    /// One pending block per tree level, back to back. Block 0 collects data; block L ≥ 1
    /// collects the hashes of level L (level 1 holds the hashes of the data blocks).
    private var pending: [UInt8]
    /// Number of hashes appended so far to each level; index L - 1 is level L.
    private var hashCounts: [UInt64] = []
    /// Largest data size whose tree fits into the levels allocated so far.
    private var capacity: UInt64 = 0

    /// - Precondition: `blockSize` is a power of two in 1024...65536 (what the kernel accepts).
    public init(algorithm: FsVerityAlgorithm = .sha256, blockSize: Int = 4096) {
        precondition(
            (1024...65536).contains(blockSize) && blockSize.nonzeroBitCount == 1,
            "fs-verity block size must be a power of two between 1024 and 65536")
        self.algorithm = algorithm
        self.blockSize = blockSize
        pending = [UInt8](repeating: 0, count: blockSize)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        switch algorithm {
        case .sha256: absorb(SHA256Block.self, bytes)
        case .sha512: absorb(SHA512Block.self, bytes)
        }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Returns the fs-verity file digest.
    public consuming func finalize() -> ObjectID {
        withUnsafeTemporaryAllocation(byteCount: FsVerityDescriptor.size, alignment: 8) { descriptor in
            descriptor.initializeMemory(as: UInt8.self, repeating: 0)
            // An empty file keeps the all-zero root hash.
            if dataSize > 0 {
                let root = UnsafeMutableRawBufferPointer(
                    rebasing: descriptor[FsVerityDescriptor.rootHashRange])
                switch algorithm {
                case .sha256: computeRootHash(SHA256Block.self, into: root)
                case .sha512: computeRootHash(SHA512Block.self, into: root)
                }
            }
            FsVerityDescriptor.fillHeader(
                descriptor, algorithm: algorithm, blockSize: blockSize, dataSize: dataSize)
            let bytes = UnsafeRawBufferPointer(descriptor)
            let digest = switch algorithm {
            case .sha256: SHA256Block.hash(bytes)
            case .sha512: SHA512Block.hash(bytes)
            }
            return ObjectID(computed: digest, algorithm: algorithm)
        }
    }

    /// Appends precomputed hashes of whole data blocks (level 1 of the tree) covering
    /// `dataBytes` bytes; used by the parallel file digest, whose workers hash data blocks.
    /// - Precondition: no partial data block is pending.
    mutating func appendDataBlockHashes(_ hashes: UnsafeRawBufferPointer, dataBytes: Int) {
        let digestSize = algorithm.digestSize
        precondition(dataSize % UInt64(blockSize) == 0, "partial data block pending")
        precondition(hashes.count == dataBytes / blockSize * digestSize && dataBytes % blockSize == 0)
        dataSize += UInt64(dataBytes)
        reserveLevels()
        switch algorithm {
        case .sha256: withLevels(SHA256Block.self) { $0.appendDataBlockHashes(hashes) }
        case .sha512: withLevels(SHA512Block.self) { $0.appendDataBlockHashes(hashes) }
        }
    }

    private mutating func absorb<H: BlockHash>(_: H.Type, _ input: UnsafeRawBufferPointer) {
        let blockSize = self.blockSize
        let pendingBytes = Int(dataSize % UInt64(blockSize))
        dataSize += UInt64(input.count)
        reserveLevels()
        withLevels(H.self) { levels in
            let dataBlock = levels.block(0)
            var rest = input
            if pendingBytes > 0 {
                let n = min(blockSize - pendingBytes, rest.count)
                UnsafeMutableRawBufferPointer(rebasing: dataBlock[pendingBytes..<pendingBytes + n])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: rest[..<n]))
                rest = UnsafeRawBufferPointer(rebasing: rest[n...])
                guard pendingBytes + n == blockSize else { return }
                levels.appendDataBlock(UnsafeRawBufferPointer(dataBlock))
            }
            // Hot path: hash whole blocks directly from the caller's memory, no copying.
            while rest.count >= blockSize {
                levels.appendDataBlock(UnsafeRawBufferPointer(rebasing: rest[..<blockSize]))
                rest = UnsafeRawBufferPointer(rebasing: rest[blockSize...])
            }
            dataBlock.copyMemory(from: rest)
        }
    }

    /// Flushes the partial blocks bottom-up until a level holds a single hash: the root hash.
    private mutating func computeRootHash<H: BlockHash>(
        _: H.Type, into root: UnsafeMutableRawBufferPointer
    ) {
        let blockSize = self.blockSize
        let tail = Int(dataSize % UInt64(blockSize))
        withLevels(H.self) { levels in
            if tail > 0 {
                let dataBlock = levels.block(0)
                UnsafeMutableRawBufferPointer(rebasing: dataBlock[tail...])
                    .initializeMemory(as: UInt8.self, repeating: 0)
                levels.appendDataBlock(UnsafeRawBufferPointer(dataBlock))
            }
            var level = 1
            while levels.hashCounts[level - 1] > 1 {
                let used = levels.pendingHashBytes(level)
                if used > 0 {
                    UnsafeMutableRawBufferPointer(rebasing: levels.block(level)[used...])
                        .initializeMemory(as: UInt8.self, repeating: 0)
                    levels.appendHash(ofBlockAt: level)
                }
                level += 1
            }
            root.copyMemory(
                from: UnsafeRawBufferPointer(rebasing: levels.block(level)[..<levels.digestSize]))
        }
    }

    /// Grows the level storage so that a tree over `dataSize` bytes fits: with n hash levels
    /// the tree covers up to blockSize * fanout^(n-1) bytes before its top level has > 1 hash.
    private mutating func reserveLevels() {
        let fanout = UInt64(blockSize / algorithm.digestSize)
        while dataSize > capacity {
            hashCounts.append(0)
            pending.append(contentsOf: repeatElement(0, count: blockSize))
            if hashCounts.count == 1 {
                capacity = UInt64(blockSize)
            } else {
                let (grown, overflow) = capacity.multipliedReportingOverflow(by: fanout)
                capacity = overflow ? .max : grown
            }
        }
    }

    private mutating func withLevels<H: BlockHash, R>(
        _: H.Type, _ body: (MerkleLevels<H>) -> R
    ) -> R {
        let blockSize = self.blockSize
        let digestSize = algorithm.digestSize
        return pending.withUnsafeMutableBytes { blocks in
            hashCounts.withUnsafeMutableBufferPointer { counts in
                body(MerkleLevels(blocks: blocks, hashCounts: counts, blockSize: blockSize, digestSize: digestSize))
            }
        }
    }
}

/// The pending blocks of an `FsVerityHasher`, borrowed as raw memory for the duration of one call.
private struct MerkleLevels<H: BlockHash> {
    let blocks: UnsafeMutableRawBufferPointer
    let hashCounts: UnsafeMutableBufferPointer<UInt64>
    let blockSize: Int
    let digestSize: Int

    var fanout: Int { blockSize / digestSize }

    func block(_ level: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: blocks[level * blockSize..<(level + 1) * blockSize])
    }

    /// Bytes of hashes waiting in the pending block of `level` (≥ 1).
    func pendingHashBytes(_ level: Int) -> Int {
        Int(hashCounts[level - 1] % UInt64(fanout)) * digestSize
    }

    /// Where the next hash of `level` (≥ 1) is to be written.
    func nextSlot(_ level: Int) -> UnsafeMutableRawBufferPointer {
        let start = level * blockSize + pendingHashBytes(level)
        return UnsafeMutableRawBufferPointer(rebasing: blocks[start..<start + digestSize])
    }

    func appendDataBlock(_ block: UnsafeRawBufferPointer) {
        H.hash(block, into: nextSlot(1))
        commit(1)
    }

    func appendDataBlockHashes(_ hashes: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < hashes.count {
            nextSlot(1).copyMemory(from: UnsafeRawBufferPointer(rebasing: hashes[offset..<offset + digestSize]))
            commit(1)
            offset += digestSize
        }
    }

    /// Hashes the (full or zero-padded) pending block of `level` into the level above.
    func appendHash(ofBlockAt level: Int) {
        H.hash(UnsafeRawBufferPointer(block(level)), into: nextSlot(level + 1))
        commit(level + 1)
    }

    /// Counts the hash just written to `nextSlot(level)`; a block it fills is passed upward.
    private func commit(_ level: Int) {
        hashCounts[level - 1] += 1
        if pendingHashBytes(level) == 0 {
            appendHash(ofBlockAt: level)
        }
    }
}

/// Layout of `struct fsverity_descriptor` from `<linux/fsverity.h>` (256 bytes, little endian):
/// version, hash_algorithm, log_blocksize, salt_size, le32 sig_size, le64 data_size,
/// root_hash[64], salt[32], reserved[144].
enum FsVerityDescriptor {
    static let size = 256
    static let rootHashRange = 16..<16 + 64

    /// Writes the header fields; the rest (root hash, no salt, reserved) is left as is.
    static func fillHeader(
        _ descriptor: UnsafeMutableRawBufferPointer, algorithm: FsVerityAlgorithm, blockSize: Int,
        dataSize: UInt64
    ) {
        descriptor[0] = 1  // version
        descriptor[1] = algorithm.rawValue
        descriptor[2] = UInt8(blockSize.trailingZeroBitCount)
        descriptor[3] = 0  // salt_size
        descriptor.storeBytes(of: UInt32(0), toByteOffset: 4, as: UInt32.self)  // sig_size
        descriptor.storeBytes(of: dataSize.littleEndian, toByteOffset: 8, as: UInt64.self)
    }
}
