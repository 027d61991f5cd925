// Open backing files kept between reads, so a file read in many requests is opened
// (and checked) once rather than per request.
//
// Direct-mapped by nid. A reader takes the descriptor out of its slot and puts it back
// when done, so a descriptor is only ever used by one thread and the lock is held for
// a few instructions; a second reader of the same file meanwhile opens its own, and
// whichever comes back second is closed (or evicts an older file from the slot).

#if canImport(Glibc)
import Glibc
#endif

final class DescriptorPool: @unchecked Sendable {
    private struct Slot {
        var nid: UInt64 = 0
        var fd: Int32 = -1
    }

    static let slotCount = 256

    private let slots: UnsafeMutablePointer<Slot>
    private let lock: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        slots = .allocate(capacity: Self.slotCount)
        slots.initialize(repeating: Slot(), count: Self.slotCount)
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        for i in 0..<Self.slotCount where slots[i].fd >= 0 { close(slots[i].fd) }
        slots.deallocate()
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    @inline(__always)
    private func slot(_ nid: UInt64) -> Int {
        // nids of neighbouring inodes differ in their low bits.
        Int(truncatingIfNeeded: (nid ^ (nid >> 8)) % UInt64(Self.slotCount))
    }

    /// The pooled descriptor of `nid`, now owned by the caller, if there is one.
    func take(_ nid: UInt64) -> Int32? {
        let i = slot(nid)
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        guard slots[i].fd >= 0, slots[i].nid == nid else { return nil }
        let fd = slots[i].fd
        slots[i].fd = -1
        return fd
    }

    /// Gives a descriptor of `nid` (owned by the caller) to the pool.
    func put(_ nid: UInt64, _ fd: Int32) {
        let i = slot(nid)
        pthread_mutex_lock(lock)
        let previous = slots[i]
        let keep = previous.fd < 0 || previous.nid != nid
        if keep { slots[i] = Slot(nid: nid, fd: fd) }
        pthread_mutex_unlock(lock)
        if !keep {
            close(fd)  // Another reader already put this file back.
        } else if previous.fd >= 0 {
            close(previous.fd)  // Evicted.
        }
    }
}
