import GrantTable
public import XenCore

/// One range of memory the simulated hypervisor handed out: a grant mapping, a gntshr share or pages to
/// grant. Tests use these to check that a device released everything it mapped or shared, and (with an
/// exit test) that a late access to a released range traps.
///
/// OCaml: none (introspection of the simulator)
public struct SimulatedMemoryRecord: Sendable, Hashable {
    /// What the range is.
    public enum Kind: Sendable, Hashable {
        /// `domain` mapped `refs` of `peer`.
        case mapping
        /// `domain` shared `refs` with `peer` through gntshr.
        case share
        /// `domain` allocated pages to grant (``SimulatedGrantTable/allocatePages(_:)``).
        case allocation
    }

    /// What the range is.
    public let kind: Kind
    /// The domain that mapped, shared or allocated.
    public let domain: DomainID
    /// The granter (mapping) or grantee (share); nil for an allocation.
    public let peer: DomainID?
    /// The grant references involved (empty for an allocation).
    public let refs: [GrantRef]
    /// The first byte's address in this process (as an integer: do not dereference it except to prove a
    /// released range traps).
    public let address: Int
    /// The range's length.
    public let byteCount: Int
    /// Whether it was released (and fenced, when the hypervisor fences released pages).
    public internal(set) var released: Bool
}

/// The records, by id: every live range, and the last ``retainedReleased`` released ones.
struct MemoryLog {
    static let retainedReleased = 4096
    private var records: [UInt64: SimulatedMemoryRecord] = [:]
    private var releasedOrder: [UInt64] = []
    private var nextID: UInt64 = 0

    mutating func add(_ record: SimulatedMemoryRecord) -> UInt64 {
        nextID += 1
        records[nextID] = record
        return nextID
    }

    mutating func markReleased(_ id: UInt64) {
        guard records[id]?.released == false else { return }
        records[id]?.released = true
        releasedOrder.append(id)
        if releasedOrder.count > Self.retainedReleased {
            let dropped = releasedOrder.prefix(releasedOrder.count - Self.retainedReleased)
            for old in dropped { records[old] = nil }
            releasedOrder.removeFirst(dropped.count)
        }
    }

    var all: [SimulatedMemoryRecord] { records.keys.sorted().compactMap { records[$0] } }
}

extension SimulatedHypervisor {
    /// The memory ranges `domain` mapped, shared or allocated, oldest first: every live one and the most
    /// recently released ones (a few thousand are kept).
    ///
    /// OCaml: none (introspection of the simulator)
    public func memoryRecords(of domain: DomainID) -> [SimulatedMemoryRecord] {
        state.withLock { state in state.memory.all.filter { $0.domain == domain } }
    }

    func recordMemory(
        _ kind: SimulatedMemoryRecord.Kind, domain: DomainID, peer: DomainID?, refs: [GrantRef],
        address: UnsafeMutableRawPointer, byteCount: Int
    ) -> UInt64 {
        let record = SimulatedMemoryRecord(
            kind: kind, domain: domain, peer: peer, refs: refs, address: Int(bitPattern: address),
            byteCount: byteCount, released: false)
        return state.withLock { $0.memory.add(record) }
    }

    func recordReleased(_ id: UInt64) { state.withLock { $0.memory.markReleased(id) } }
}
