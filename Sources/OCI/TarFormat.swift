// The tar formats OCI layers use (POSIX ustar, pax, GNU), decoded into entries.
//
// Header block (512 bytes; all numbers octal text, or base-256 when the first byte has 0x80):
//   0 name[100]  100 mode[8]  108 uid[8]  116 gid[8]  124 size[12]  136 mtime[12]
//   148 chksum[8]  156 typeflag  157 linkname[100]  257 magic[6]  263 version[2]
//   265 uname[32]  297 gname[32]  329 devmajor[8]  337 devminor[8]
//   ustar: 345 prefix[155]
//   GNU ("ustar  \0"): 345 atime[12] 357 ctime[12] 369 offset[12] 381 longnames[4]
//                      386 sparse[4] × {offset[12], numbytes[12]}  482 isextended  483 realsize[12]
// GNU sparse extension block: 21 × {offset[12], numbytes[12]}, 504 isextended.
// Extended headers: typeflag 'x' (pax, next entry), 'g' (pax global), 'L'/'K' (GNU long name / link).

import ComposeFS
import ComposeFSBase

/// What a tar member is.
public enum TarEntryKind: Sendable, Equatable {
    case regular, hardlink, symlink, characterDevice, blockDevice, directory, fifo
}

/// One member of a layer, with its pax and GNU extensions applied.
public struct TarEntry: Sendable {
    public var path: [UInt8]
    public var kind: TarEntryKind
    /// Permission bits (with setuid, setgid, sticky).
    public var permissions: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var mtime: Timestamp
    /// Size of the file (for sparse files, the expanded size).
    public var size: UInt64
    /// Bytes of data that follow the header in the archive.
    public var dataSize: UInt64
    /// Symlink target or hard link target.
    public var linkTarget: [UInt8]
    public var deviceMajor: UInt32
    public var deviceMinor: UInt32
    public var xattrs: [Xattr]
    /// For sparse files: the data segments, in order, as (offset in the file, length).
    /// `sparseMapInData` means the map is at the start of the data (pax sparse 1.0).
    public var sparseMap: [(offset: UInt64, length: UInt64)]?
    public var sparseMapInData: Bool
}

/// Fixed layout of a header block.
enum TarHeaderField {
    static let blockSize = 512
    static let name = 0..<100
    static let mode = 100..<108
    static let uid = 108..<116
    static let gid = 116..<124
    static let size = 124..<136
    static let mtime = 136..<148
    static let checksum = 148..<156
    static let typeflag = 156
    static let linkname = 157..<257
    static let magic = 257..<263
    static let version = 263..<265
    static let devmajor = 329..<337
    static let devminor = 337..<345
    static let prefix = 345..<500
    static let gnuSparse = 386..<482
    static let gnuIsExtended = 482
    static let gnuRealSize = 483..<495
    static let sparseEntrySize = 24
    static let extensionIsExtended = 504
}

/// Limits that keep hostile layers from exhausting memory.
enum TarLimits {
    /// Largest total of pax and GNU long-name data accepted before one entry.
    static let extendedHeaderMax = 1 << 20
    /// Largest number of sparse segments of one file.
    static let sparseSegmentsMax = 1 << 16
}

/// What follows a header block in the archive.
enum TarHeaderAction {
    /// The end-of-archive marker (a zero block).
    case endOfArchive
    /// An extended header whose `size` bytes of data the caller reads and hands to `extendedData`.
    case extended(size: UInt64)
    /// A GNU sparse header continues in the next block (`sparseExtension`).
    case sparseExtension
    /// A complete entry; its data follows.
    case entry(TarEntry)
}

/// Decodes header blocks one by one, remembering pending extended headers.
struct TarHeaderDecoder {
    let layer: String
    private var pendingPax: [(key: [UInt8], value: [UInt8])] = []
    private var pendingLongName: [UInt8]?
    private var pendingLongLink: [UInt8]?
    private var pendingExtendedType: UInt8?
    /// Extended header bytes announced since the last entry (bounded: headers can repeat).
    private var pendingExtendedBytes: UInt64 = 0
    /// A GNU sparse entry waiting for its extension blocks.
    private var pendingSparse: TarEntry?
    /// Path of the last entry, for error messages.
    private(set) var lastPath: String?

    init(layer: String) { self.layer = layer }

    func fail(_ reason: String, path: [UInt8]? = nil) -> OCIError {
        .badTar(layer: layer, entry: path.map { displayBytes($0) } ?? lastPath, reason: reason)
    }

    /// Decodes one header block.
    mutating func header(_ block: UnsafeRawBufferPointer) throws(OCIError) -> TarHeaderAction {
        precondition(block.count == TarHeaderField.blockSize)
        if block.allSatisfy({ $0 == 0 }) {
            guard pendingPax.isEmpty, pendingLongName == nil, pendingLongLink == nil else {
                throw fail("archive ends after an extended header")
            }
            return .endOfArchive
        }
        try verifyChecksum(block)
        let typeflag = block[TarHeaderField.typeflag]
        let magic = Array(block[TarHeaderField.magic])
        let version = Array(block[TarHeaderField.version])
        let isGNU = magic == Array("ustar ".utf8) && version == [0x20, 0]
        let isUstar = magic == Array("ustar\0".utf8)

        switch typeflag {
        case UInt8(ascii: "x"), UInt8(ascii: "g"), UInt8(ascii: "L"), UInt8(ascii: "K"):
            let size = try number(block, TarHeaderField.size, "size")
            pendingExtendedBytes += min(size, UInt64(TarLimits.extendedHeaderMax) + 1)
            guard pendingExtendedBytes <= UInt64(TarLimits.extendedHeaderMax) else {
                throw fail("extended headers of over \(TarLimits.extendedHeaderMax) bytes before one entry")
            }
            pendingExtendedType = typeflag
            return .extended(size: size)
        default:
            break
        }

        var name = cString(block, TarHeaderField.name)
        if isUstar {
            let prefix = cString(block, TarHeaderField.prefix)
            if !prefix.isEmpty { name = prefix + [UInt8(ascii: "/")] + name }
        }
        if let long = pendingLongName { name = long }
        var linkTarget = cString(block, TarHeaderField.linkname)
        if let long = pendingLongLink { linkTarget = long }

        var entry = TarEntry(
            path: name, kind: .regular, permissions: 0, uid: 0, gid: 0, mtime: .zero, size: 0, dataSize: 0,
            linkTarget: linkTarget, deviceMajor: 0, deviceMinor: 0, xattrs: [], sparseMap: nil, sparseMapInData: false)
        lastPath = displayBytes(name)
        entry.permissions = UInt32(truncatingIfNeeded: try number(block, TarHeaderField.mode, "mode") & 0o7777)
        entry.uid = try id(try number(block, TarHeaderField.uid, "uid"), "uid")
        entry.gid = try id(try number(block, TarHeaderField.gid, "gid"), "gid")
        entry.mtime = Timestamp(seconds: try signedNumber(block, TarHeaderField.mtime, "mtime"), nanoseconds: 0)
        entry.dataSize = try number(block, TarHeaderField.size, "size")
        entry.size = entry.dataSize

        switch typeflag {
        case 0, UInt8(ascii: "0"), UInt8(ascii: "7"):
            // Old archives mark directories with a trailing slash only.
            entry.kind = name.last == UInt8(ascii: "/") ? .directory : .regular
        case UInt8(ascii: "1"): entry.kind = .hardlink
        case UInt8(ascii: "2"): entry.kind = .symlink
        case UInt8(ascii: "3"): entry.kind = .characterDevice
        case UInt8(ascii: "4"): entry.kind = .blockDevice
        case UInt8(ascii: "5"): entry.kind = .directory
        case UInt8(ascii: "6"): entry.kind = .fifo
        case UInt8(ascii: "S") where isGNU:
            entry.kind = .regular
            entry.size = try number(block, TarHeaderField.gnuRealSize, "sparse real size")
            entry.sparseMap = try gnuSparseSegments(block, TarHeaderField.gnuSparse.lowerBound, count: 4)
        default:
            throw fail("unsupported tar entry type '\(displayBytes([typeflag]))'")
        }
        if entry.kind == .characterDevice || entry.kind == .blockDevice {
            entry.deviceMajor = try id(try number(block, TarHeaderField.devmajor, "devmajor"), "devmajor")
            entry.deviceMinor = try id(try number(block, TarHeaderField.devminor, "devminor"), "devminor")
        }
        try applyPax(to: &entry)
        pendingPax = []
        pendingLongName = nil
        pendingLongLink = nil
        pendingExtendedBytes = 0

        if typeflag == UInt8(ascii: "S") && isGNU && block[TarHeaderField.gnuIsExtended] != 0 {
            pendingSparse = entry
            return .sparseExtension
        }
        return .entry(try finished(entry))
    }

    /// Decodes a GNU sparse extension block; returns the entry once its last block is read.
    mutating func sparseExtension(_ block: UnsafeRawBufferPointer) throws(OCIError) -> TarEntry? {
        guard var entry = pendingSparse else { throw fail("unexpected sparse extension block") }
        let more = try gnuSparseSegments(block, 0, count: 21)
        entry.sparseMap = (entry.sparseMap ?? []) + more
        guard entry.sparseMap?.count ?? 0 <= TarLimits.sparseSegmentsMax else { throw fail("too many sparse segments") }
        if block[TarHeaderField.extensionIsExtended] != 0 {
            pendingSparse = entry
            return nil
        }
        pendingSparse = nil
        return try finished(entry)
    }

    /// Takes the data of the extended header announced by the last `header` call.
    mutating func extendedData(_ data: [UInt8]) throws(OCIError) {
        guard let type = pendingExtendedType else { throw fail("unexpected extended header data") }
        pendingExtendedType = nil
        switch type {
        case UInt8(ascii: "L"):
            pendingLongName = Array(data.prefix { $0 != 0 })
        case UInt8(ascii: "K"):
            pendingLongLink = Array(data.prefix { $0 != 0 })
        case UInt8(ascii: "x"):
            pendingPax += try parsePaxRecords(data)
        default:
            // Global pax headers: validated, but (as in umoci and Go's tar) not applied.
            _ = try parsePaxRecords(data)
        }
    }

    // MARK: Fields

    private func verifyChecksum(_ block: UnsafeRawBufferPointer) throws(OCIError) {
        let stored = try number(block, TarHeaderField.checksum, "checksum")
        var unsigned: UInt64 = 0
        var signed: Int64 = 0
        for (i, byte) in block.enumerated() {
            let value = TarHeaderField.checksum.contains(i) ? UInt8(ascii: " ") : byte
            unsigned += UInt64(value)
            signed += Int64(Int8(bitPattern: value))
        }
        // Some old tars summed signed bytes.
        guard stored == unsigned || Int64(bitPattern: stored) == signed else {
            throw fail("header checksum mismatch (not a tar archive, or corrupted)")
        }
    }

    private func cString(_ block: UnsafeRawBufferPointer, _ range: Range<Int>) -> [UInt8] {
        Array(block[range].prefix { $0 != 0 })
    }

    /// A non-negative numeric field: octal text, or base-256.
    private func number(_ block: UnsafeRawBufferPointer, _ range: Range<Int>, _ field: String) throws(OCIError) -> UInt64 {
        let value = try signedNumber(block, range, field)
        guard value >= 0 else { throw fail("negative \(field)") }
        return UInt64(value)
    }

    private func signedNumber(_ block: UnsafeRawBufferPointer, _ range: Range<Int>, _ field: String) throws(OCIError) -> Int64 {
        let bytes = block[range]
        guard let first = bytes.first else { return 0 }
        if first & 0x80 != 0 {
            // Base-256, two's complement; 0xff marks a negative number.
            let negative = first == 0xFF
            var value: UInt64 = negative ? UInt64.max : 0
            var significant = false
            for (i, byte) in bytes.enumerated() {
                let digit = i == 0 ? (negative ? byte : byte & 0x7F) : byte
                if significant || digit != (negative ? 0xFF : 0) { significant = true }
                guard value >> 56 == (negative ? 0xFF : 0) else { throw fail("\(field) out of range") }
                value = value << 8 | UInt64(digit)
            }
            let result = Int64(bitPattern: value)
            guard negative == (result < 0) else { throw fail("\(field) out of range") }
            return result
        }
        var value: UInt64 = 0
        var index = bytes.startIndex
        while index < bytes.endIndex && (bytes[index] == 0x20 || bytes[index] == 0) { index += 1 }
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == 0x20 || byte == 0 { break }
            guard (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(byte) else {
                throw fail("invalid \(field) field '\(displayBytes(bytes.prefix { $0 != 0 }))'")
            }
            guard value >> 60 == 0 else { throw fail("\(field) out of range") }
            value = value << 3 | UInt64(byte - UInt8(ascii: "0"))
            index += 1
        }
        guard let result = Int64(exactly: value) else { throw fail("\(field) out of range") }
        return result
    }

    private func id(_ value: UInt64, _ field: String) throws(OCIError) -> UInt32 {
        guard let result = UInt32(exactly: value) else { throw fail("\(field) \(value) out of range") }
        return result
    }

    private func gnuSparseSegments(_ block: UnsafeRawBufferPointer, _ start: Int, count: Int) throws(OCIError) -> [(offset: UInt64, length: UInt64)] {
        var segments: [(offset: UInt64, length: UInt64)] = []
        for i in 0..<count {
            let base = start + i * TarHeaderField.sparseEntrySize
            // An empty slot ends the list.
            if block[base] == 0 { break }
            let offset = try number(block, base..<(base + 12), "sparse offset")
            let length = try number(block, (base + 12)..<(base + 24), "sparse length")
            segments.append((offset, length))
        }
        return segments
    }

    // MARK: pax

    /// "LENGTH KEY=VALUE\n" records, LENGTH counting the whole record.
    private func parsePaxRecords(_ data: [UInt8]) throws(OCIError) -> [(key: [UInt8], value: [UInt8])] {
        var records: [(key: [UInt8], value: [UInt8])] = []
        var offset = 0
        while offset < data.count {
            // Padding after the last record.
            if data[offset] == 0 { break }
            var lengthEnd = offset
            var length = 0
            while lengthEnd < data.count, data[lengthEnd] != UInt8(ascii: " ") {
                let byte = data[lengthEnd]
                guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte), length < data.count else {
                    throw fail("malformed pax record")
                }
                length = length * 10 + Int(byte - UInt8(ascii: "0"))
                lengthEnd += 1
            }
            let recordEnd = offset + length
            guard lengthEnd > offset, lengthEnd < recordEnd, recordEnd <= data.count, data[recordEnd - 1] == 0x0A else {
                throw fail("malformed pax record")
            }
            let body = data[(lengthEnd + 1)..<(recordEnd - 1)]
            guard let equals = body.firstIndex(of: UInt8(ascii: "=")), equals > body.startIndex else {
                throw fail("malformed pax record (no key)")
            }
            records.append((Array(body[..<equals]), Array(body[(equals + 1)...])))
            offset = recordEnd
        }
        return records
    }

    private mutating func applyPax(to entry: inout TarEntry) throws(OCIError) {
        var sparseMajor: UInt64?
        var sparseOffsets: [UInt64] = []
        var sparseLengths: [UInt64] = []
        var sparseRealSize: UInt64?
        var sparseName: [UInt8]?
        func decimal(_ value: [UInt8], _ key: String) throws(OCIError) -> UInt64 {
            guard !value.isEmpty, value.count <= 20, value.allSatisfy({ (0x30...0x39).contains($0) }),
                let number = UInt64(String(decoding: value, as: UTF8.self))
            else { throw fail("invalid pax \(key) '\(displayBytes(value))'") }
            return number
        }
        for (keyBytes, value) in pendingPax {
            let key = String(decoding: keyBytes, as: UTF8.self)
            // An empty value unsets the keyword (POSIX): the header's field stands, no xattr.
            if value.isEmpty {
                if keyBytes.starts(with: Array("SCHILY.xattr.".utf8)) { entry.xattrs.removeAll { $0.key == Array(keyBytes.dropFirst(13)) } }
                continue
            }
            switch key {
            case "path":
                entry.path = value
            case "linkpath":
                entry.linkTarget = value
            case "size":
                entry.dataSize = try decimal(value, key)
                entry.size = entry.dataSize
            case "uid":
                entry.uid = try id(try decimal(value, key), key)
            case "gid":
                entry.gid = try id(try decimal(value, key), key)
            case "mtime":
                entry.mtime = try paxTime(value)
            case "SCHILY.devmajor":
                entry.deviceMajor = try id(try decimal(value, key), key)
            case "SCHILY.devminor":
                entry.deviceMinor = try id(try decimal(value, key), key)
            case "GNU.sparse.major":
                sparseMajor = try decimal(value, key)
            case "GNU.sparse.minor":
                _ = try decimal(value, key)
            case "GNU.sparse.name":
                sparseName = value
            case "GNU.sparse.size", "GNU.sparse.realsize":
                sparseRealSize = try decimal(value, key)
            case "GNU.sparse.offset":
                sparseOffsets.append(try decimal(value, key))
            case "GNU.sparse.numbytes":
                sparseLengths.append(try decimal(value, key))
            case "GNU.sparse.map":
                let numbers = value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
                guard numbers.count % 2 == 0 else { throw fail("invalid GNU.sparse.map") }
                for (i, number) in numbers.enumerated() {
                    let parsed = try decimal(Array(number), key)
                    if i % 2 == 0 { sparseOffsets.append(parsed) } else { sparseLengths.append(parsed) }
                }
            default:
                if keyBytes.starts(with: Array("SCHILY.xattr.".utf8)) {
                    try addXattr(Array(keyBytes.dropFirst(13)), value, to: &entry)
                }
                // Other keys (atime, ctime, uname, gname, LIBARCHIVE.xattr.*, …) do not reach the tree,
                // as in umoci and composefs-rs.
            }
        }
        guard sparseOffsets.count == sparseLengths.count, sparseOffsets.count <= TarLimits.sparseSegmentsMax else {
            throw fail("inconsistent pax sparse map")
        }
        if sparseMajor != nil || sparseRealSize != nil || !sparseOffsets.isEmpty {
            guard entry.kind == .regular, let realSize = sparseRealSize else { throw fail("incomplete pax sparse header") }
            entry.size = realSize
            if let sparseName { entry.path = sparseName }
            if sparseMajor == 1 {
                entry.sparseMapInData = true
                entry.sparseMap = []
            } else {
                entry.sparseMap = Array(zip(sparseOffsets, sparseLengths)).map { (offset: $0.0, length: $0.1) }
            }
        }
    }

    private func addXattr(_ key: [UInt8], _ value: [UInt8], to entry: inout TarEntry) throws(OCIError) {
        guard !key.isEmpty, key.count <= Limits.xattrNameMax, !key.contains(0) else {
            throw fail("invalid xattr name '\(displayBytes(key))'")
        }
        entry.xattrs.removeAll { $0.key == key }
        entry.xattrs.append(Xattr(key: key, value: value))
    }

    /// "SECONDS[.FRACTION]", possibly negative.
    private func paxTime(_ value: [UInt8]) throws(OCIError) -> Timestamp {
        let negative = value.first == UInt8(ascii: "-")
        let body = negative ? Array(value.dropFirst()) : value
        let parts = body.split(separator: UInt8(ascii: "."), maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.count <= 18, whole.allSatisfy({ (0x30...0x39).contains($0) }),
            let seconds = Int64(String(decoding: whole, as: UTF8.self))
        else { throw fail("invalid pax mtime '\(displayBytes(value))'") }
        var nanoseconds: UInt32 = 0
        if parts.count == 2 {
            let fraction = parts[1]
            guard fraction.allSatisfy({ (0x30...0x39).contains($0) }) else { throw fail("invalid pax mtime '\(displayBytes(value))'") }
            var digits = Array(fraction.prefix(9))
            while digits.count < 9 { digits.append(UInt8(ascii: "0")) }
            nanoseconds = UInt32(String(decoding: digits, as: UTF8.self)) ?? 0
        }
        if negative {
            // -1.25 is 1.25 s before the epoch: seconds -2, nanoseconds 0.75 s.
            if nanoseconds == 0 { return Timestamp(seconds: -seconds, nanoseconds: 0) }
            return Timestamp(seconds: -seconds - 1, nanoseconds: 1_000_000_000 - nanoseconds)
        }
        return Timestamp(seconds: seconds, nanoseconds: nanoseconds)
    }

    // MARK: Validation

    private func finished(_ entry: TarEntry) throws(OCIError) -> TarEntry {
        var entry = entry
        guard !entry.path.isEmpty else { throw fail("empty path", path: entry.path) }
        guard !entry.path.contains(0), entry.path.count < Limits.pathMax else { throw fail("invalid path", path: entry.path) }
        if entry.kind == .symlink || entry.kind == .hardlink {
            guard !entry.linkTarget.isEmpty else { throw fail("empty link target", path: entry.path) }
            guard !entry.linkTarget.contains(0), entry.linkTarget.count < Limits.pathMax else {
                throw fail("link target too long", path: entry.path)
            }
        }
        if entry.kind != .regular {
            // Hard links, symlinks, devices and directories carry no content in a layer.
            entry.size = 0
        }
        if var map = entry.sparseMap, !entry.sparseMapInData {
            map = try checkedSparseMap(map, size: entry.size, dataSize: entry.dataSize, path: entry.path)
            entry.sparseMap = map
        }
        return entry
    }

    /// Segments must be in order, inside the file, and their data must fill the archive data.
    func checkedSparseMap(
        _ map: [(offset: UInt64, length: UInt64)], size: UInt64, dataSize: UInt64, path: [UInt8]
    ) throws(OCIError) -> [(offset: UInt64, length: UInt64)] {
        var end: UInt64 = 0
        var total: UInt64 = 0
        for segment in map {
            let (segmentEnd, overflow) = segment.offset.addingReportingOverflow(segment.length)
            guard !overflow, segment.offset >= end, segmentEnd <= size else {
                throw fail("invalid sparse map", path: path)
            }
            end = segmentEnd
            total += segment.length
        }
        guard total <= dataSize else { throw fail("sparse map describes more data than the entry holds", path: path) }
        return map
    }
}
