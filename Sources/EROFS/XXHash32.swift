// xxHash32, which EROFS uses for the per-inode xattr name bloom filter.

public enum XXHash32 {
    private static let prime1: UInt32 = 2_654_435_761
    private static let prime2: UInt32 = 2_246_822_519
    private static let prime3: UInt32 = 3_266_489_917
    private static let prime4: UInt32 = 668_265_263
    private static let prime5: UInt32 = 374_761_393

    @inline(__always) private static func rotl(_ x: UInt32, _ r: UInt32) -> UInt32 { (x << r) | (x >> (32 - r)) }

    @inline(__always) private static func round(_ seed: UInt32, _ input: UInt32) -> UInt32 {
        rotl(seed &+ input &* prime2, 13) &* prime1
    }

    public static func hash(_ input: ArraySlice<UInt8>, seed: UInt32) -> UInt32 {
        input.withUnsafeBytes { hash($0, seed: seed) }
    }

    public static func hash(_ p: UnsafeRawBufferPointer, seed: UInt32) -> UInt32 {
        let len = p.count
        var i = 0
        @inline(__always) func le32(_ at: Int) -> UInt32 {
            UInt32(littleEndian: p.loadUnaligned(fromByteOffset: at, as: UInt32.self))
        }
        var h: UInt32
        if len >= 16 {
            var v1 = seed &+ prime1 &+ prime2
            var v2 = seed &+ prime2
            var v3 = seed
            var v4 = seed &- prime1
            while i <= len - 16 {
                v1 = round(v1, le32(i))
                v2 = round(v2, le32(i + 4))
                v3 = round(v3, le32(i + 8))
                v4 = round(v4, le32(i + 12))
                i += 16
            }
            h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
        } else {
            h = seed &+ prime5
        }
        h = h &+ UInt32(truncatingIfNeeded: len)
        while i + 4 <= len {
            h = rotl(h &+ le32(i) &* prime3, 17) &* prime4
            i += 4
        }
        while i < len {
            h = rotl(h &+ UInt32(p[i]) &* prime5, 11) &* prime1
            i += 1
        }
        h ^= h >> 15
        h = h &* prime2
        h ^= h >> 13
        h = h &* prime3
        h ^= h >> 16
        return h
    }
}
