// The hash of one contiguous buffer, written into a digest-sized destination: what the Merkle
// tree does for every block. libcrypto's low-level SHA-256/SHA-512 with the context on the
// stack: the fastest measured here (a heap hasher object per 4 KiB block costs more than the
// block; the one-shot SHA256()/SHA512() go through EVP's algorithm fetch each call, 4-14%
// slower, and link all of EVP, 2.5 MB of a static executable).

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
        var context = SHA256_CTX()
        SHA256_Init(&context)
        SHA256_Update(&context, bytes.baseAddress, bytes.count)
        SHA256_Final(destination.baseAddress?.assumingMemoryBound(to: UInt8.self), &context)
    }
}

enum SHA512Block: BlockHash {
    static var digestSize: Int { 64 }

    @inline(__always)
    static func hash(_ bytes: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) {
        var context = SHA512_CTX()
        SHA512_Init(&context)
        SHA512_Update(&context, bytes.baseAddress, bytes.count)
        SHA512_Final(destination.baseAddress?.assumingMemoryBound(to: UInt8.self), &context)
    }
}
