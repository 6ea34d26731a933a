import EventChannel
import GrantTable
import Synchronization
public import XenCore

/// Errors of the simulator's domain registry.
///
/// Not in OCaml (Mirage has no simulated hypervisor; the closest is xenctrl's `domain_create` errors).
public enum SimulatedHypervisorError: Error, Equatable, Sendable {
    /// `createDomain(id:)` with an id already in use.
    case domainExists(DomainID)
    /// An id outside 1 ..< `DOMID_FIRST_RESERVED` (0x7ff0), or no id left.
    case invalidDomainID(DomainID)
}

/// An in-process hypervisor: several simulated domains that grant each other pages and exchange events.
///
/// Each ``SimulatedDomain`` hands out a ``SimulatedGrantTable``, gntshr interfaces and a
/// ``SimulatedEventChannel`` conforming to the same protocols as the real backends, so a frontend in one
/// domain and a backend in another run in one test process. Grants enforce the granted domid and
/// writability; a mapping is a view of the granting domain's very memory. Notifications coalesce per port
/// as Xen's pending bit does. All state sits behind one lock: deterministic (domids, ports and refs are
/// allocated lowest-first / FIFO) and Sendable. Domain 0 exists from the start.
/// Not in OCaml: the embedded double the demo and the tests use (like swift-nio's `NIOEmbedded`).
public final class SimulatedHypervisor: Sendable {
    /// Entries in every domain's grant table.
    public let grantTableSize: Int
    /// Refs below this are not in the free pool (mirage-xen reserves 8: console 0, xenstore 1, ...).
    public let reservedGrants: Int
    /// The highest port number + 1 a domain may bind.
    public let maxPorts: UInt32
    /// Whether released pages are fenced (see ``init(grantTableSize:reservedGrants:maxPorts:fenceReleasedPages:)``).
    public let fenceReleasedPages: Bool
    let state: Mutex<State>

    /// Creates a hypervisor with domain 0 (UUID all zero, as Xen's dom0 handle).
    ///
    /// - Parameters:
    ///   - grantTableSize: entries per domain (mirage-xen: 4 pages of v1 entries = 2048).
    ///   - reservedGrants: refs kept out of the free pool (mirage-xen: 8).
    ///   - maxPorts: event-channel ports per domain.
    ///   - fenceReleasedPages: stricter than Xen (the default): every grant mapping gets an address of its
    ///     own (the granted pages mapped a second time), and when a mapping is unmapped or a share unshared,
    ///     its address range is replaced by an inaccessible mapping that is never handed out again, so a late
    ///     access through a stale pointer traps at once instead of reading or corrupting reused memory. Each
    ///     fence keeps its address space reserved for the life of the process; a long benchmark may turn
    ///     this off (released ranges are then unmapped).
    ///
    /// Not in OCaml.
    public init(
        grantTableSize: Int = 2048, reservedGrants: Int = 8, maxPorts: UInt32 = 4096, fenceReleasedPages: Bool = true
    ) {
        precondition(reservedGrants >= 0 && reservedGrants < grantTableSize && grantTableSize <= 1 << 20)
        self.grantTableSize = grantTableSize
        self.reservedGrants = reservedGrants
        self.maxPorts = maxPorts
        self.fenceReleasedPages = fenceReleasedPages
        var initial = State()
        initial.domains[.dom0] = DomainRecord(
            id: .dom0, uuid: .zero, name: "Domain-0",
            pool: GrantRefPool(refs: UInt32(reservedGrants)..<UInt32(grantTableSize)))
        state = Mutex(initial)
    }

    // MARK: - Domains

    /// Domain 0.
    public var dom0: SimulatedDomain {
        state.withLock { state in
            // Domain 0 cannot be destroyed, so its record is always there.
            SimulatedDomain(hypervisor: self, record: state.domains[.dom0]!)
        }
    }

    /// Creates a domain: `id` (or the lowest free id from 1), `uuid` (or a deterministic one derived from a
    /// creation counter), `name`.
    ///
    /// C: `libxl_domain_create_new` (reduced to what the device stack needs)
    public func createDomain(
        id: DomainID? = nil, name: String = "", uuid: DomainUUID? = nil
    ) throws(SimulatedHypervisorError) -> SimulatedDomain {
        let size = grantTableSize
        let reserved = reservedGrants
        let result: Result<SimulatedDomain, SimulatedHypervisorError> = state.withLock { state in
            let chosen: DomainID
            if let id {
                guard id.rawValue >= 1, id.rawValue < 0x7FF0 else { return .failure(.invalidDomainID(id)) }
                guard state.domains[id] == nil else { return .failure(.domainExists(id)) }
                chosen = id
            } else {
                var candidate: UInt16 = 1
                while state.domains[DomainID(candidate)] != nil, candidate < 0x7FF0 { candidate += 1 }
                guard candidate < 0x7FF0 else { return .failure(.invalidDomainID(DomainID(candidate))) }
                chosen = DomainID(candidate)
            }
            state.created += 1
            let identity = uuid ?? Self.deterministicUUID(state.created)
            let record = DomainRecord(
                id: chosen, uuid: identity, name: name, pool: GrantRefPool(refs: UInt32(reserved)..<UInt32(size)))
            state.domains[chosen] = record
            return .success(SimulatedDomain(hypervisor: self, record: record))
        }
        return try result.get()
    }

    /// The domain with `id`, or nil if it does not exist.
    ///
    /// C: `libxl_domain_info` / `xc_domain_getinfo` (existence and UUID)
    public func domain(_ id: DomainID) -> SimulatedDomain? {
        state.withLock { state in
            state.domains[id].map { SimulatedDomain(hypervisor: self, record: $0) }
        }
    }

    /// Every live domain, by id.
    ///
    /// C: `libxl_list_domain`
    public var domains: [SimulatedDomain] {
        state.withLock { state in
            state.domains.values.sorted { $0.id < $1.id }.map { SimulatedDomain(hypervisor: self, record: $0) }
        }
    }

    /// Destroys a domain: its event channels close (peers' ports become unbound, its notification sequences
    /// finish), its grants disappear (existing mappings of them keep the memory mapped), and every
    /// ``domainReleases()`` sequence yields it. Answers false for an unknown domain or domain 0.
    ///
    /// C: `libxl_domain_destroy` (the `@releaseDomain` watch fires)
    @discardableResult
    public func destroyDomain(_ id: DomainID) -> Bool {
        guard id != .dom0 else { return false }
        let removed: (DomainRecord, [AsyncStream<SimulatedDomain>.Continuation])? = state.withLock { state in
            guard let record = state.domains.removeValue(forKey: id) else { return nil }
            for (_, port) in record.ports {
                guard case .interdomain(let remote, let remotePort) = port else { continue }
                if state.domains[remote]?.ports[remotePort] != nil {
                    state.domains[remote]?.ports[remotePort] = .unbound(remote: id)
                }
            }
            return (record, Array(state.releaseWatchers.values))
        }
        guard let (record, watchers) = removed else { return false }
        record.signals.closeAll()
        let released = SimulatedDomain(hypervisor: self, record: record)
        for watcher in watchers { watcher.yield(released) }
        return true
    }

    /// Yields each domain as it is destroyed (from the moment of the call on).
    ///
    /// Xenstore: the `@releaseDomain` special watch
    public func domainReleases() -> AsyncStream<SimulatedDomain> {
        let (stream, continuation) = AsyncStream<SimulatedDomain>.makeStream(bufferingPolicy: .unbounded)
        let key = state.withLock { state in
            state.nextWatcher += 1
            state.releaseWatchers[state.nextWatcher] = continuation
            return state.nextWatcher
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.releaseWatchers.removeValue(forKey: key) }
        }
        return stream
    }

    /// `53580000-0000-4000-8000-<counter>`: recognisable, valid v4 layout, and the same on every run.
    private static func deterministicUUID(_ counter: UInt64) -> DomainUUID {
        var bytes: [UInt8] = [0x53, 0x58, 0, 0, 0, 0, 0x40, 0, 0x80, 0]
        for shift in stride(from: 40, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: counter >> UInt64(shift)))
        }
        return DomainUUID(bytes: bytes) ?? .zero
    }
}

// MARK: - State

extension SimulatedHypervisor {
    struct GrantEntry {
        let grantee: DomainID
        let writable: Bool
        let memory: GrantedMemory
        var mappings = 0
        /// Set by a gntshr unshare while mapped: the ref is revoked and freed when the last mapping goes.
        var unsharePending = false
    }

    enum PortState: Equatable {
        case unbound(remote: DomainID)
        case interdomain(remote: DomainID, remotePort: UInt32)
    }

    struct DomainRecord {
        let id: DomainID
        let uuid: DomainUUID
        let name: String
        let pool: GrantRefPool
        let signals = EventPortSignals()
        var grants: [UInt32: GrantEntry] = [:]
        var ports: [UInt32: PortState] = [:]
    }

    struct State {
        var domains: [DomainID: DomainRecord] = [:]
        /// Memory handed out (mappings, shares, allocations): live ones, then the most recent released ones.
        var memory = MemoryLog()
        var created: UInt64 = 0
        var releaseWatchers: [UInt64: AsyncStream<SimulatedDomain>.Continuation] = [:]
        var nextWatcher: UInt64 = 0
    }
}

// MARK: - Domains

/// One simulated domain: its identity and its grant-table, gntshr and event-channel interfaces.
///
/// A value: cheap to copy; every copy talks to the same hypervisor state. Operations after the domain was
/// destroyed fail with `noSuchDomain`.
/// Not in OCaml (a Mirage unikernel *is* a domain; here several share one process).
public struct SimulatedDomain: Sendable, Hashable {
    /// The hypervisor this domain lives in.
    public let hypervisor: SimulatedHypervisor
    /// The domain id.
    public let id: DomainID
    /// The domain's UUID.
    public let uuid: DomainUUID
    /// The name given at creation.
    public let name: String
    let pool: GrantRefPool
    let signals: EventPortSignals

    init(hypervisor: SimulatedHypervisor, record: SimulatedHypervisor.DomainRecord) {
        self.hypervisor = hypervisor
        self.id = record.id
        self.uuid = record.uuid
        self.name = record.name
        self.pool = record.pool
        self.signals = record.signals
    }

    /// This domain's grant table (export and import sides).
    ///
    /// OCaml: `Xen_os.Xen.Export` / `Import` as seen from this domain
    public var grantTable: SimulatedGrantTable { SimulatedGrantTable(hypervisor: hypervisor, domain: id, refs: pool) }

    /// This domain's event channels.
    ///
    /// OCaml: `Eventchn.init ()` in this domain
    public var eventChannel: SimulatedEventChannel {
        SimulatedEventChannel(hypervisor: hypervisor, domain: id, signals: signals)
    }

    /// Opens a gntshr interface for this domain.
    ///
    /// OCaml: `Gnt.Gntshr.interface_open`
    public func openGntshr() -> SimulatedGntshr { SimulatedGntshr(hypervisor: hypervisor, domain: id, refs: pool) }

    /// Opens a gntshr interface, runs `body`, and closes it, also when `body` throws.
    ///
    /// OCaml: `Gnt.Gntshr.with_gntshr`
    public func withGntshr<R>(_ body: (SimulatedGntshr) throws -> R) rethrows -> R {
        let interface = openGntshr()
        defer { interface.close() }
        return try body(interface)
    }

    /// The `async` form of ``withGntshr(_:)``: closes the interface on every path, cancellation included.
    ///
    /// OCaml: `Gnt.Gntshr.with_gntshr`
    public func withGntshr<R>(
        isolation: isolated (any Actor)? = #isolation, _ body: (SimulatedGntshr) async throws -> R
    ) async rethrows -> R {
        let interface = openGntshr()
        defer { interface.close() }
        return try await body(interface)
    }

    /// Whether the domain still exists.
    public var isAlive: Bool {
        // Identity, not id: a later domain may reuse the id after this one was destroyed.
        hypervisor.domain(id).map { $0.pool === pool } ?? false
    }

    /// Same hypervisor, id and UUID.
    ///
    /// Not in OCaml.
    public static func == (lhs: SimulatedDomain, rhs: SimulatedDomain) -> Bool {
        lhs.hypervisor === rhs.hypervisor && lhs.id == rhs.id && lhs.uuid == rhs.uuid
    }

    /// Hashes the hypervisor identity, id and UUID.
    ///
    /// Not in OCaml.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(ObjectIdentifier(hypervisor))
        hasher.combine(id)
        hasher.combine(uuid)
    }
}
