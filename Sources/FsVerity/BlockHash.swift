// The hash of one contiguous buffer, written into a digest-sized destination: what the Merkle
// tree does for every block. libcrypto's one-shot functions, the fastest measured here (a
// hasher object per 4 KiB block costs more than the block).

import CLibcrypto

protocol BlockHash {
    static var digestSize: Int { get }
    static func hash(_ bytes: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer)
}

extension BlockHash {
    static func hash(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: digestSize) { buffer, count in
            hash(bytes, into: UnsafeMutableRawBufferPointer(buffer))
            count = digestSize
        }
    }
}

enum SHA256Block: BlockHash {
    static var digestSize: Int { 32 }

    @inline(__always)
    static func hash(_ bytes: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) {
        SHA256(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, destination.baseAddress?.assumingMemoryBound(to: UInt8.self))
    }
}

enum SHA512Block: BlockHash {
    static var digestSize: Int { 64 }

    @inline(__always)
    static func hash(_ bytes: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) {
        SHA512(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, destination.baseAddress?.assumingMemoryBound(to: UInt8.self))
    }
}
