// The section table of a PE (EFI) executable, read as composefs-rs 0.9 reads a UKI's: the DOS
// header's e_lfanew (at 0x3C) points at "PE\0\0" and the 20-byte COFF header, the section
// headers (40 bytes each) follow the optional header, and a section's data is VirtualSize bytes
// at PointerToRawData (SizeOfRawData, rounded up to the file alignment, is not used: the padding
// is not part of the data). The MZ signature is not checked, as there. Every byte offset of the
// format is in this file.

/// A PE file that cannot be read, or lacks a section.
public enum PEError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Shorter than the 64-byte DOS header.
    case truncatedDOSHeader(size: Int)
    /// e_lfanew points where no PE header fits.
    case peHeaderOutOfBounds(offset: UInt32, size: Int)
    case badSignature(offset: UInt32)
    /// The section headers run past the end of the file.
    case sectionTableOutOfBounds(offset: Int, sections: Int, size: Int)
    /// The section's data (VirtualSize bytes at PointerToRawData) runs past the end of the file.
    case sectionOutOfBounds(name: String, offset: UInt32, length: UInt32, size: Int)
    case missingSection(String)

    public var description: String {
        switch self {
        case let .truncatedDOSHeader(size):
            "not a valid EFI executable: \(size) bytes is too short for a DOS header (\(PEFile.dosHeaderSize))"
        case let .peHeaderOutOfBounds(offset, size):
            "not a valid EFI executable: the PE header offset \(offset) is past the end of the file (\(size) bytes)"
        case let .badSignature(offset):
            "not a valid EFI executable: no PE signature at offset \(offset)"
        case let .sectionTableOutOfBounds(offset, sections, size):
            "not a valid EFI executable: \(sections) section headers at offset \(offset) run past the end of the file (\(size) bytes)"
        case let .sectionOutOfBounds(name, offset, length, size):
            "not a valid EFI executable: section '\(name)' (\(length) bytes at offset \(offset)) runs past the end of the file (\(size) bytes)"
        case let .missingSection(name):
            "no '\(name)' section"
        }
    }
}

public struct PEFile: Sendable {
    public struct Section: Equatable, Sendable {
        /// The 8 bytes of the header's name field, NUL-padded.
        public var rawName: [UInt8]
        public var virtualSize: UInt32
        public var virtualAddress: UInt32
        public var sizeOfRawData: UInt32
        public var pointerToRawData: UInt32

        /// The name up to its first NUL.
        public var name: String { String(decoding: rawName.prefix { $0 != 0 }, as: UTF8.self) }
    }

    static let dosHeaderSize = 0x40
    static let peOffsetField = 0x3C
    static let signature: [UInt8] = [0x50, 0x45, 0, 0]  // "PE\0\0"
    /// The signature and the COFF file header.
    static let peHeaderSize = 4 + 20
    static let sectionCountField = 4 + 2
    static let optionalHeaderSizeField = 4 + 16
    static let sectionHeaderSize = 40
    static let sectionNameSize = 8

    public let sections: [Section]
    /// The whole file.
    public let bytes: [UInt8]

    public init(_ bytes: [UInt8]) throws(PEError) {
        self.bytes = bytes
        let size = bytes.count
        guard size >= Self.dosHeaderSize else { throw .truncatedDOSHeader(size: size) }
        let peOffset = Self.u32(bytes, Self.peOffsetField)
        guard UInt64(peOffset) + UInt64(Self.peHeaderSize) <= UInt64(size) else {
            throw .peHeaderOutOfBounds(offset: peOffset, size: size)
        }
        let pe = Int(peOffset)
        guard bytes[pe..<(pe + 4)].elementsEqual(Self.signature) else { throw .badSignature(offset: peOffset) }
        let count = Int(Self.u16(bytes, pe + Self.sectionCountField))
        let table = pe + Self.peHeaderSize + Int(Self.u16(bytes, pe + Self.optionalHeaderSizeField))
        guard table + count * Self.sectionHeaderSize <= size else {
            throw .sectionTableOutOfBounds(offset: table, sections: count, size: size)
        }
        sections = (0..<count).map { index in
            let header = table + index * Self.sectionHeaderSize
            return Section(
                rawName: Array(bytes[header..<(header + Self.sectionNameSize)]),
                virtualSize: Self.u32(bytes, header + 8), virtualAddress: Self.u32(bytes, header + 12),
                sizeOfRawData: Self.u32(bytes, header + 16), pointerToRawData: Self.u32(bytes, header + 20))
        }
    }

    /// The data of the first section called `name` (a name longer than 8 bytes names none).
    public func section(_ name: String) throws(PEError) -> ArraySlice<UInt8> {
        let key = Array(name.utf8)
        let padded = key + [UInt8](repeating: 0, count: max(0, Self.sectionNameSize - key.count))
        guard let section = sections.first(where: { $0.rawName == padded }) else { throw .missingSection(name) }
        let start = UInt64(section.pointerToRawData)
        let end = start + UInt64(section.virtualSize)
        guard end <= UInt64(bytes.count) else {
            throw .sectionOutOfBounds(name: name, offset: section.pointerToRawData, length: section.virtualSize, size: bytes.count)
        }
        return bytes[Int(start)..<Int(end)]
    }

    private static func u16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    private static func u32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
    }
}
