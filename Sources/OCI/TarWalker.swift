// The one walk over a tar archive's entries, whatever holds the archive: a layer being
// imported (a byte stream split into a split stream as it goes), a layer read back from its
// split stream (inline chunks and objects), or an image archive on disk (indexed in place).
// The walk decodes header blocks, extended headers and sparse extension blocks; the input
// says how the bytes arrive and what becomes of each entry's data.

import ComposeFSBase

/// Where a tar walk reads from.
protocol TarInput {
    /// What the walk's user keeps of an entry's data (its content, where it is, nothing).
    associatedtype EntryData

    /// Fills `buffer` with the next bytes of headers or extended-header data; returns fewer
    /// bytes only at the end of the archive.
    mutating func readRecord(into buffer: UnsafeMutableRawBufferPointer, decoder: TarHeaderDecoder) throws(OCIError) -> Int

    /// Consumes an entry's `entry.dataSize` bytes of data and the `padding` after them.
    mutating func consumeData(of entry: TarEntry, padding: UInt64, decoder: TarHeaderDecoder) throws(OCIError) -> EntryData
}

struct TarWalker<Input: TarInput> {
    var input: Input
    private(set) var decoder: TarHeaderDecoder

    init(_ input: Input, layer: String) {
        self.input = input
        decoder = TarHeaderDecoder(layer: layer)
    }

    /// Padding after `size` bytes of data, to the next block.
    static func padding(_ size: UInt64) -> UInt64 {
        (UInt64(TarHeaderField.blockSize) - size % UInt64(TarHeaderField.blockSize)) % UInt64(TarHeaderField.blockSize)
    }

    /// The next entry and what the input kept of its data; nil at the end of the archive.
    mutating func next() throws(OCIError) -> (entry: TarEntry, data: Input.EntryData)? {
        while true {
            let block = try read(TarHeaderField.blockSize)
            // An archive may stop at an entry boundary without its end-of-archive blocks, as Go's
            // tar and bsdtar allow (umoci 0.4.7 and older write layers like that).
            if block.isEmpty { return nil }
            guard block.count == TarHeaderField.blockSize else { throw decoder.fail("archive is truncated (in a header)") }
            let entry: TarEntry
            switch try withBytes(block, { (raw) throws(OCIError) in try decoder.header(raw) }) {
            case .endOfArchive:
                return nil
            case let .extended(size):
                let data = try readExactly(Int(size + Self.padding(size)), "an extended header")
                try decoder.extendedData(Array(data[..<Int(size)]))
                continue
            case .sparseExtension:
                entry = try sparseEntry()
            case let .entry(decoded):
                entry = decoded
            }
            return (entry, try input.consumeData(of: entry, padding: Self.padding(entry.dataSize), decoder: decoder))
        }
    }

    /// A GNU sparse entry, once its extension blocks are read.
    private mutating func sparseEntry() throws(OCIError) -> TarEntry {
        while true {
            let extensionBlock = try readExactly(TarHeaderField.blockSize, "a sparse header")
            if let entry = try withBytes(extensionBlock, { (raw) throws(OCIError) in try decoder.sparseExtension(raw) }) {
                return entry
            }
        }
    }

    /// Up to `count` bytes of headers or extended data (fewer only at the end).
    private mutating func read(_ count: Int) throws(OCIError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let decoder = self.decoder
        let read = try withMutableBytes(&bytes) { (buffer) throws(OCIError) in try self.input.readRecord(into: buffer, decoder: decoder) }
        bytes.removeSubrange(read...)
        return bytes
    }

    private mutating func readExactly(_ count: Int, _ what: String) throws(OCIError) -> [UInt8] {
        let bytes = try read(count)
        guard bytes.count == count else { throw decoder.fail("archive is truncated (in \(what))") }
        return bytes
    }
}
