import Synchronization
public import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// Page-aligned buffers reused for frames a device assembles before copying them on (a frontend's frames
/// larger than a page, a backend's frames on their way to the peer): a fresh `PageBuffer` of 64 KiB would be
/// allocated and zeroed for every frame.
///
/// OCaml: none (mirage-net-xen keeps one `tx_scratch`/`rx_scratch` page per backend)
public final class ScratchBuffers: Sendable {
    private let spare = Mutex<[PageStorage]>([])
    /// Buffers kept for reuse.
    public let limit: Int

    /// A pool keeping up to `limit` buffers.
    public init(limit: Int = 16) { self.limit = limit }

    /// A buffer of at least `bytes` (whole pages), viewed as exactly `bytes`. Its old contents are not
    /// cleared: callers overwrite what they send (`fill` returns the length it wrote).
    public func take(_ bytes: Int) -> PageBuffer {
        let pages = max(1, (bytes + xenPageSize - 1) / xenPageSize)
        let reused = spare.withLock { list -> PageStorage? in
            guard let index = list.lastIndex(where: { $0.byteCount >= pages * xenPageSize }) else { return nil }
            return list.remove(at: index)
        }
        return PageBuffer(storage: reused ?? PageStorage(pages: max(pages, 17)), offset: 0, count: bytes)
    }

    /// Returns a buffer from ``take(_:)`` once no view of it is used any more.
    public func give(_ buffer: PageBuffer) {
        spare.withLock { list in
            if list.count < limit { list.append(buffer.storage) }
        }
    }
}

extension PageBuffer {
    /// A page-aligned buffer of `bytes` whose contents are not cleared: for a frame about to be overwritten
    /// whole (a received frame is copied in before anyone sees it), where zeroing 64 KiB per frame would cost
    /// as much as the copy itself.
    ///
    /// OCaml: `Cstruct.create_unsafe`
    public static func uninitialized(_ bytes: Int) -> PageBuffer {
        let size = max(1, (bytes + xenPageSize - 1) / xenPageSize) * xenPageSize
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, xenPageSize, size) == 0, let raw else {
            return PageBuffer(pages: size / xenPageSize).slice(from: 0, count: bytes)
        }
        let storage = PageStorage(borrowing: raw, byteCount: size) { pointer, _ in free(pointer) }
        return PageBuffer(storage: storage, offset: 0, count: bytes)
    }
}
