// Checks backing files against the fs-verity digests the image records for them.
//
// Always: when the kernel has fs-verity enabled on the file, its measurement must
// match (an ioctl, so this costs nothing). With `-o verity`, files without kernel
// fs-verity are hashed in userspace instead, once per inode for as long as the file
// stays the same (same device, inode, size and change time).

import FsVerity

#if canImport(Glibc)
import Glibc
#endif

final class BackingFileVerifier: @unchecked Sendable {
    /// Hash files the kernel cannot vouch for.
    let computeMissing: Bool

    private struct Identity: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var changeSeconds: Int
        var changeNanoseconds: Int
    }

    private var verified: [UInt64: Identity] = [:]
    private let lock: UnsafeMutablePointer<pthread_mutex_t>

    init(computeMissing: Bool) {
        self.computeMissing = computeMissing
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return body()
    }

    /// Whether the open backing file `fd` of inode `nid` may be served.
    func verify(nid: UInt64, fd: Int32, _ st: stat, expected: ObjectID) -> Bool {
        do throws(FsVerityError) {
            let measured = try FsVerity.measure(fileDescriptor: fd)
            if measured.algorithm == expected.algorithm { return measured == expected }
            // Sealed with another algorithm: nothing to compare with the kernel's value.
        } catch .notEnabled, .notSupported {
        } catch .unknownAlgorithm {
        } catch {
            return false
        }
        guard computeMissing else { return true }
        let identity = Identity(
            device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
            changeSeconds: st.st_ctim.tv_sec, changeNanoseconds: st.st_ctim.tv_nsec)
        if locked({ verified[nid] == identity }) { return true }
        guard let digest = try? FsVerity.digest(fileDescriptor: fd, algorithm: expected.algorithm), digest == expected else {
            return false
        }
        locked { verified[nid] = identity }
        return true
    }
}
