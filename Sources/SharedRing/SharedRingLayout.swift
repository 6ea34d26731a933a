import Synchronization
import XenCore

/// Why a shared ring could not be set up or used. Every case that starts "peer" means the other domain
/// wrote an index that no correct peer writes: the caller ends the connection.
///
/// OCaml: `Ring.Rpc` raises `Failure`; Linux's `RING_REQUEST_PROD_OVERFLOW` check in xen-blkback
public enum SharedRingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The memory is not whole pages, or an entry does not fit in it.
    case badGeometry(String)
    /// The backend published more responses than there are requests outstanding.
    case peerResponseOverflow(responseProducer: UInt32, responseConsumer: UInt32, requestProducer: UInt32)
    /// The frontend published more requests than the ring holds.
    case peerRequestOverflow(requestProducer: UInt32, responseProducer: UInt32, size: UInt32)

    public var description: String {
        switch self {
        case .badGeometry(let why): "bad shared ring geometry: \(why)"
        case .peerResponseOverflow(let prod, let cons, let req):
            "peer response index overflow: rsp_prod=\(prod) rsp_cons=\(cons) req_prod=\(req)"
        case .peerRequestOverflow(let prod, let rsp, let size):
            "peer request index overflow: req_prod=\(prod) rsp_prod_pvt=\(rsp) ring size=\(size)"
        }
    }
}

/// The shape of a ring.h shared ring: a 64-byte header (`req_prod`, `req_event`, `rsp_prod`, `rsp_event`,
/// private bytes, padding) followed by a power-of-two number of entries, each the size of the union of the
/// request and response structs.
///
/// OCaml: `Ring.Rpc` geometry (`shared-memory-ring`); C: `__RING_SIZE` in ring.h
public struct SharedRingGeometry: Sendable, Equatable {
    /// Bytes of the header before the first entry.
    public static let headerSize = 64
    /// Offsets of the four shared indices in the header.
    static let requestProducerOffset = 0
    static let requestEventOffset = 4
    static let responseProducerOffset = 8
    static let responseEventOffset = 12

    /// Bytes per entry (`sizeof(union { req; rsp })`).
    public let entrySize: Int
    /// Pages the ring spans (1 << ring-page-order).
    public let pages: Int
    /// Number of entries: the largest power of two that fits.
    public let size: UInt32

    /// The geometry of a ring of `pages` pages holding entries of `entrySize` bytes.
    ///
    /// C: `__CONST_RING_SIZE` / `__RING_SIZE`
    public init(entrySize: Int, pages: Int) throws(SharedRingError) {
        guard entrySize > 0, pages > 0, pages <= 1 << 16 else {
            throw .badGeometry("entry size \(entrySize), pages \(pages)")
        }
        let fit = (pages * xenPageSize - Self.headerSize) / entrySize
        guard fit >= 1 else { throw .badGeometry("entry of \(entrySize) bytes does not fit in \(pages) page(s)") }
        // Round down to a power of two: ring.h's __RD32.
        var size = 1
        while size * 2 <= fit { size *= 2 }
        self.entrySize = entrySize
        self.pages = pages
        self.size = UInt32(size)
    }

    /// Bytes of memory the ring occupies.
    public var byteCount: Int { pages * xenPageSize }

    /// Offset of the entry for free-running index `index`.
    @inline(__always)
    func entryOffset(_ index: UInt32) -> Int {
        Self.headerSize + Int(index & (size &- 1)) * entrySize
    }
}

// MARK: - Shared index access

/// The four shared indices of a ring's header, read and written with atomic loads and stores so that the
/// compiler neither caches nor tears them, and with the barriers ring.h places around them.
struct SharedRingHeader: @unchecked Sendable {
    let base: UnsafeMutableRawPointer

    init(memory: PageBuffer) { self.base = memory.pointer }

    @inline(__always)
    private func cell(_ offset: Int) -> UnsafeMutablePointer<Atomic<UInt32>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt32>.self)
    }

    /// An acquiring load: entries the peer wrote before publishing this index are visible after it.
    @inline(__always)
    func load(_ offset: Int) -> UInt32 { cell(offset).pointee.load(ordering: .acquiring) }

    /// A releasing store: entries written before are visible to a peer that sees the new index (ring.h's wmb).
    @inline(__always)
    func store(_ value: UInt32, _ offset: Int) { cell(offset).pointee.store(value, ordering: .releasing) }

    /// ring.h's `xen_mb()`: orders an index store before the following event-index load.
    @inline(__always)
    func fullBarrier() { atomicMemoryFence(ordering: .sequentiallyConsistent) }
}
