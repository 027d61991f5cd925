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

