import Foundation

/// The reference vectors, or nil (with a note) in a clone without ../shared.
func assetDirectory() -> URL? {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let assets = root.deletingLastPathComponent().appendingPathComponent("shared/vectors/composefs-assets")
    guard FileManager.default.fileExists(atPath: assets.path) else {
        print("skipping: \(assets.path) not present")
        return nil
    }
    return assets
}

/// SplitMix64: reproducible pseudo-random numbers, so failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func next(below bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
