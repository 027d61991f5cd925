import CComposeFSSys
import ComposeFSBase
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// fs-verity digests computed in userspace, and the kernel's fs-verity ioctls.
public enum FsVerity {
    /// Size of the reused read buffer: large enough to amortize syscalls and let the
    /// hasher take whole blocks straight from it.
    static let readBufferSize = 1 << 20

    /// Digest of an in-memory buffer.
    public static func digest(
        of bytes: UnsafeRawBufferPointer, algorithm: FsVerityAlgorithm = .sha256, blockSize: Int = 4096
    ) -> ObjectID {
        var hasher = FsVerityHasher(algorithm: algorithm, blockSize: blockSize)
        hasher.update(bytes)
        return hasher.finalize()
    }

    public static func digest(
        of bytes: [UInt8], algorithm: FsVerityAlgorithm = .sha256, blockSize: Int = 4096
    ) -> ObjectID {
        bytes.withUnsafeBytes { digest(of: $0, algorithm: algorithm, blockSize: blockSize) }
    }

    /// Digest of a whole open file, read from offset 0 with pread (does not move the file offset).
    /// Throws `FsVerityError.io(errno)` on read errors.
    public static func digest(
        fileDescriptor fd: Int32, algorithm: FsVerityAlgorithm = .sha256, blockSize: Int = 4096
    ) throws(FsVerityError) -> ObjectID {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: readBufferSize, alignment: 4096)
        defer { buffer.deallocate() }
        return try digest(fileDescriptor: fd, algorithm: algorithm, blockSize: blockSize, readBuffer: buffer)
    }

    /// The same, reading through `readBuffer` (callers digesting many files reuse one: a
    /// megabyte allocated per file is a mapping made and torn down per file).
    public static func digest(
        fileDescriptor fd: Int32, algorithm: FsVerityAlgorithm = .sha256, blockSize: Int = 4096,
        readBuffer: UnsafeMutableRawBufferPointer
    ) throws(FsVerityError) -> ObjectID {
        var hasher = FsVerityHasher(algorithm: algorithm, blockSize: blockSize)
        try hashFile(fd, from: 0, into: &hasher, buffer: readBuffer)
        return hasher.finalize()
    }

    /// FS_IOC_ENABLE_VERITY (no salt, no signature).
    /// Throws `.notSupported` when the kernel or file system lacks fs-verity, `.alreadyEnabled`
    /// for EEXIST and `.io(errno)` otherwise.
    public static func enable(
        fileDescriptor fd: Int32, algorithm: FsVerityAlgorithm = .sha256, blockSize: Int = 4096
    ) throws(FsVerityError) {
        let result = cfs_fsverity_enable(fd, UInt32(algorithm.rawValue), UInt32(blockSize))
        switch -result {
        case 0:
            return
        case EEXIST:
            throw .alreadyEnabled
        // EINVAL: file systems that support verity only with other parameters (e.g. block
        // size != page size on older kernels). ENOSYS: emulators lacking the ioctl.
        case EOPNOTSUPP, ENOTTY, EINVAL, ENOSYS:
            throw .notSupported
        case let errorCode:
            throw .io(errorCode)
        }
    }

    /// FS_IOC_MEASURE_VERITY: the digest the kernel recorded when verity was enabled.
    /// Throws `.notEnabled` when the file system supports verity but the file has none,
    /// `.notSupported` when the file system does not, `.io(errno)` otherwise. An algorithm
    /// unknown to this library is `.unknownAlgorithm`.
    public static func measure(fileDescriptor fd: Int32) throws(FsVerityError) -> ObjectID {
        let measured = try kernelMeasurement(fd)
        guard let algorithm = UInt8(exactly: measured.algorithm).flatMap(FsVerityAlgorithm.init(rawValue:)),
            let id = ObjectID(algorithm: algorithm, bytes: measured.digest)
        else { throw .unknownAlgorithm(measured.algorithm) }
        return id
    }

    /// The kernel's measurement if verity is enabled on the file, otherwise the digest computed
    /// in userspace (what `composefs-info measure-file` does).
    /// Throws `.wrongAlgorithm` if the kernel measured the file with another algorithm.
    public static func measureOrCompute(
        fileDescriptor fd: Int32, algorithm: FsVerityAlgorithm = .sha256
    ) throws(FsVerityError) -> ObjectID {
        do throws(FsVerityError) {
            let measured = try kernelMeasurement(fd)
            guard measured.algorithm == UInt16(algorithm.rawValue), let id = ObjectID(algorithm: algorithm, bytes: measured.digest) else {
                throw .wrongAlgorithm(expected: algorithm, actual: measured.algorithm)
            }
            return id
        } catch .notEnabled, .notSupported {
            return try digest(fileDescriptor: fd, algorithm: algorithm)
        }
    }

    private static func kernelMeasurement(
        _ fd: Int32
    ) throws(FsVerityError) -> (algorithm: UInt16, digest: [UInt8]) {
        var algorithm: UInt16 = 0
        var digest = [UInt8](repeating: 0, count: 64)  // FS_VERITY_MAX_DIGEST_SIZE
        var size = UInt16(digest.count)
        let result = digest.withUnsafeMutableBufferPointer {
            cfs_fsverity_measure(fd, &algorithm, $0.baseAddress, &size)
        }
        switch -result {
        case 0:
            return (algorithm, Array(digest.prefix(Int(size))))
        case ENODATA:
            throw .notEnabled
        case EOPNOTSUPP, ENOTTY, ENOSYS:
            throw .notSupported
        case let errorCode:
            throw .io(errorCode)
        }
    }

    /// Feeds the file from `offset` up to end of file into `hasher`. A read shorter than the
    /// buffer is the end of the file: small files take one read.
    static func hashFile(
        _ fd: Int32, from offset: Int, into hasher: inout FsVerityHasher, buffer: UnsafeMutableRawBufferPointer
    ) throws(FsVerityError) {
        var offset = offset
        while true {
            let count = try readAt(fd, into: buffer, offset: offset)
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            offset += count
            if count < buffer.count { return }
            // A file larger than the buffer: only then is readahead worth a hint (failure, on a
            // pipe say, is harmless).
            if offset == buffer.count { _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL) }
        }
    }

    /// One pread: the byte count, 0 at end of file.
    static func readAt(
        _ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int
    ) throws(FsVerityError) -> Int {
        do { return try preadSome(fd, into: buffer, at: UInt64(offset), path: "") } catch { throw .io(error.code) }
    }
}
