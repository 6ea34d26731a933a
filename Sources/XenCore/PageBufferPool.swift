import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Recycles page-aligned memory for short-lived buffers (a server's READ buffers and WRITE payloads):
/// allocating and zero-filling fresh pages for every request costs page faults and an `mmap`/`munmap`
/// pair per large buffer, which dominates serving data that is already in memory.
///
/// A buffer's storage goes back to the pool when its last view is gone (``PageStorage``'s release), so no
/// memory is reused while anyone can still see it. Sizes are rounded up to a power of two pages; at most
/// `maxPooledBytes` are kept, the rest is freed. Contents of a pooled buffer are unspecified (not zeroed):
/// callers overwrite what they send.
package final class PageBufferPool: Sendable {
    private struct State {
        /// Free blocks per size class (class `n` holds blocks of 2^n pages), by address: a block in the
        /// pool belongs to nobody else.
        var free: [[UInt]]
        var pooledBytes = 0
    }

    /// Raw pointers are only ever owned by one party at a time (the pool or one storage).
    private let state: Mutex<State>
    private let maxPooledBytes: Int
    /// Largest size class pooled (2^15 pages = 128 MiB); larger buffers are allocated and freed directly.
    private static let classes = 16

    /// A pool keeping at most `maxPooledBytes` of free memory.
    package init(maxPooledBytes: Int) {
        self.maxPooledBytes = maxPooledBytes
        state = Mutex(State(free: Array(repeating: [], count: Self.classes)))
    }

    deinit {
        state.withLock { state in
            for blocks in state.free { for block in blocks { free(UnsafeMutableRawPointer(bitPattern: block)) } }
        }
    }

    /// A buffer of `count` bytes (at least one page of storage), page-aligned, contents unspecified.
    package func buffer(count: Int) -> PageBuffer {
        let pages = max(1, (count + xenPageSize - 1) / xenPageSize)
        let sizeClass = Int.bitWidth - (pages - 1).leadingZeroBitCount
        let size = (1 << sizeClass) * xenPageSize
        guard sizeClass < Self.classes else {
            return PageBuffer(pages: pages).slice(from: 0, count: count)
        }
        let reused = state.withLock { state -> UInt? in
            guard let block = state.free[sizeClass].popLast() else { return nil }
            state.pooledBytes -= size
            return block
        }
        let base: UnsafeMutableRawPointer
        if let reused, let block = UnsafeMutableRawPointer(bitPattern: reused) {
            base = block
        } else {
            var raw: UnsafeMutableRawPointer?
            guard posix_memalign(&raw, xenPageSize, size) == 0, let raw else {
                return PageBuffer(pages: pages).slice(from: 0, count: count)
            }
            base = raw
        }
        let storage = PageStorage(borrowing: base, byteCount: size) { [self] block, size in recycle(block, size) }
        return PageBuffer(storage: storage, offset: 0, count: count)
    }

    private func recycle(_ block: UnsafeMutableRawPointer, _ size: Int) {
        let sizeClass = (size / xenPageSize).trailingZeroBitCount
        let address = UInt(bitPattern: block)
        let kept = state.withLock { state -> Bool in
            guard state.pooledBytes + size <= maxPooledBytes else { return false }
            state.free[sizeClass].append(address)
            state.pooledBytes += size
            return true
        }
        if !kept { free(block) }
    }
}
