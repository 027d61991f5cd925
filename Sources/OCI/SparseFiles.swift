// Sparse tar members (GNU 'S' headers, pax GNU.sparse 0.x/1.0): the layer stream keeps the
// archived data as it is, and the file's expanded content (holes as zeros) becomes an object
// of its own when the rootfs is built.

import ComposeFS
import ComposeFSBase
import FsVerity
import Repository

#if canImport(Glibc)
import Glibc
#endif

package enum SparseFiles {
    /// Largest expanded size accepted (a tiny archive must not fill the disk).
    static let expandedSizeMax: UInt64 = 16 << 30

    /// The digest of the expanded file; with `store`, the object is written too.
    package static func expand(_ entry: TarEntry, _ content: EntryContent, repository: Repository, store: Bool) throws(OCIError) -> ObjectID {
        let path = displayBytes(entry.path)
        func fail(_ reason: String) -> OCIError { .badTar(layer: "sparse file", entry: path, reason: reason) }
        guard entry.size <= expandedSizeMax else {
            throw fail("sparse file of \(entry.size) bytes (at most \(expandedSizeMax) accepted)")
        }
        var data = try DataReader(content: content, size: entry.dataSize, repository: repository)
        var map = entry.sparseMap ?? []
        if entry.sparseMapInData {
            map = try readMap(&data, fail: fail)
            map = try TarHeaderDecoder(layer: "sparse file").checkedSparseMap(
                map, size: entry.size, dataSize: entry.dataSize - data.position, path: entry.path)
        }
        let sink = try Sink(repository: repository, store: store)
        var position: UInt64 = 0
        let zeros = [UInt8](repeating: 0, count: 1 << 16)
        func writeZeros(_ count: UInt64) throws(OCIError) {
            var remaining = count
            while remaining > 0 {
                let n = Int(min(remaining, UInt64(zeros.count)))
                try withBytes(zeros[..<n]) { (raw) throws(OCIError) in try sink.write(raw) }
                remaining -= UInt64(n)
            }
        }
        for segment in map {
            try writeZeros(segment.offset - position)
            try data.copy(segment.length, to: sink, fail: fail)
            position = segment.offset + segment.length
        }
        try writeZeros(entry.size - position)
        return try sink.finish()
    }

    /// pax sparse 1.0: decimal numbers, one per line (count, then offset/length pairs), padded to 512.
    private static func readMap(_ data: inout DataReader, fail: (String) -> OCIError) throws(OCIError) -> [(offset: UInt64, length: UInt64)] {
        func number() throws(OCIError) -> UInt64 {
            var digits: [UInt8] = []
            while true {
                guard let byte = try data.byte() else { throw fail("sparse map is truncated") }
                if byte == 0x0A { break }
                guard (0x30...0x39).contains(byte), digits.count < 20 else { throw fail("invalid sparse map") }
                digits.append(byte)
            }
            guard let value = UInt64(String(decoding: digits, as: UTF8.self)) else { throw fail("invalid sparse map") }
            return value
        }
        let count = try number()
        guard count <= UInt64(TarLimits.sparseSegmentsMax) else { throw fail("too many sparse segments") }
        var map: [(offset: UInt64, length: UInt64)] = []
        for _ in 0..<count { map.append((try number(), try number())) }
        try data.skip((512 - data.position % 512) % 512, fail: fail)
        return map
    }

    /// The archived data of the member, inline or from its object.
    private struct DataReader {
        let inline: [UInt8]?
        let file: FileDescriptor?
        let size: UInt64
        var position: UInt64 = 0

        init(content: EntryContent, size: UInt64, repository: Repository) throws(OCIError) {
            self.size = size
            switch content {
            case .none:
                inline = []
                file = nil
            case let .inline(bytes):
                inline = bytes
                file = nil
            case let .object(id):
                inline = nil
                file = try repositoryCall { () throws(RepositoryError) in try repository.openObject(id) }
            }
        }

        mutating func byte() throws(OCIError) -> UInt8? {
            var value: UInt8 = 0
            guard try read(into: &value, count: 1) == 1 else { return nil }
            return value
        }

        mutating func skip(_ count: UInt64, fail: (String) -> OCIError) throws(OCIError) {
            guard position + count <= size else { throw fail("sparse data is truncated") }
            position += count
        }

        mutating func copy(_ count: UInt64, to sink: Sink, fail: (String) -> OCIError) throws(OCIError) {
            guard position + count <= size else { throw fail("sparse data is truncated") }
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var remaining = count
            while remaining > 0 {
                let n = Int(min(remaining, UInt64(buffer.count)))
                let got = try buffer.withUnsafeMutableBufferPointer { (pointer) throws(OCIError) in
                    try read(into: pointer.baseAddress!, count: n)
                }
                guard got == n else { throw fail("sparse data is truncated") }
                try withBytes(buffer[..<n]) { (raw) throws(OCIError) in try sink.write(raw) }
                remaining -= UInt64(n)
            }
        }

        private mutating func read(into target: UnsafeMutablePointer<UInt8>, count: Int) throws(OCIError) -> Int {
            let available = Int(min(UInt64(count), size - position))
            if let inline {
                guard available > 0, Int(position) + available <= inline.count else { return 0 }
                inline.withUnsafeBufferPointer { target.update(from: $0.baseAddress! + Int(position), count: available) }
                position += UInt64(available)
                return available
            }
            guard let file else { return 0 }
            let done = try systemCall { () throws(SystemError) in
                try preadAll(file.raw, into: UnsafeMutableRawBufferPointer(start: target, count: available), at: position, path: file.path)
            }
            position += UInt64(done)
            return done
        }
    }

    /// Hashes the expanded content, writing it to an object when asked.
    private final class Sink {
        private var hasher: FsVerityHasher
        private let writer: ObjectWriter?

        init(repository: Repository, store: Bool) throws(OCIError) {
            hasher = FsVerityHasher(algorithm: repository.algorithm)
            do { writer = store ? try ObjectWriter(repository: repository) : nil } catch { throw .repository(error) }
        }

        func write(_ bytes: UnsafeRawBufferPointer) throws(OCIError) {
            if let writer {
                do { try writer.write(bytes) } catch { throw .repository(error) }
            } else {
                hasher.update(bytes)
            }
        }

        func finish() throws(OCIError) -> ObjectID {
            if let writer { return try repositoryCall { () throws(RepositoryError) in try writer.finish().id } }
            return hasher.finalize()
        }
    }
}
