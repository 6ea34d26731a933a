public import GrantTable
import Synchronization
public import XenCore

/// One simulated domain's grant table: both the export and the import side.
///
/// Grants enforce the granted domid and writability. A mapping is a ``PageBuffer`` over the granting
/// domain's very memory (it retains that memory, so it stays valid even after the granter is destroyed).
/// The memory itself is not write-protected for read-only mappings: the simulator refuses writable *maps* of
/// read-only grants, but cannot trap stray writes through a read-only mapping. `mapv` needs the granted pages
/// to be consecutive pages of one buffer (as a frontend's multi-page ring is); otherwise `.notContiguous`.
/// OCaml: `Xen_os.Xen.Export` + `Xen_os.Xen.Import` of one domain
public struct SimulatedGrantTable: UnmapNotifyingGrantTable {
    let hypervisor: SimulatedHypervisor
    /// The domain this table belongs to.
    public let domain: DomainID
    /// This domain's free grant references.
    public let refs: GrantRefPool

    /// OCaml: `Xen_os.Xen.Export.grant_access`
    public func grantAccess(
        _ ref: GrantRef, to grantee: DomainID, writable: Bool, page: PageBuffer
    ) throws(GrantTableError) {
        guard Int(ref.rawValue) < hypervisor.grantTableSize else { throw .invalidRef(ref) }
        guard page.isPageAligned, page.count >= xenPageSize else {
            throw .invalidPage(offset: page.offset, count: page.count)
        }
        let entry = SimulatedHypervisor.GrantEntry(
            grantee: grantee, writable: writable, page: page.slice(from: 0, count: xenPageSize))
        let failure: GrantTableError? = hypervisor.state.withLock { state in
            guard state.domains[domain] != nil else { return .noSuchDomain(domain) }
            guard state.domains[domain]?.grants[ref.rawValue] == nil else { return .alreadyGranted(ref) }
            state.domains[domain]?.grants[ref.rawValue] = entry
            return nil
        }
        if let failure { throw failure }
    }

    /// OCaml: `Xen_os.Xen.Export.try_end_access`
    public func endAccess(_ ref: GrantRef) throws(GrantTableError) {
        let failure: GrantTableError? = hypervisor.state.withLock { state in
            guard let record = state.domains[domain] else { return .noSuchDomain(domain) }
            guard let entry = record.grants[ref.rawValue], !entry.unsharePending else {
                return .notGranted(domain: domain, ref: ref)
            }
            guard entry.mappings == 0 else { return .busy(ref) }
            state.domains[domain]?.grants[ref.rawValue] = nil
            return nil
        }
        if let failure { throw failure }
    }

    /// OCaml: `Xen_os.Xen.Import.map_exn`
    public func map(domain granter: DomainID, ref: GrantRef, writable: Bool) throws(GrantTableError) -> GrantMapping {
        try mapv(domain: granter, refs: [ref], writable: writable)
    }

    /// OCaml: `Xen_os.Xen.Import.mapv_exn`
    public func mapv(
        domain granter: DomainID, refs grantRefs: [GrantRef], writable: Bool
    ) throws(GrantTableError) -> GrantMapping {
        let buffer = try mapView(granter: granter, refs: grantRefs, writable: writable)
        let hypervisor = self.hypervisor
        return GrantMapping(
            buffer: buffer, domain: granter, refs: grantRefs, writable: writable,
            unmap: { () throws(GrantTableError) in hypervisor.unmap(granter: granter, refs: grantRefs) }
        )
    }

    /// Maps one grant and arms `notify` for the unmap, as gntdev does: the byte in the mapped page is cleared
    /// and the event sent from this domain before the mapping goes.
    ///
    /// OCaml: none; C: `xengnttab_map_grant_ref_notify`
    public func map(
        domain granter: DomainID, ref: GrantRef, writable: Bool, notify: UnmapNotification
    ) throws(GrantTableError) -> GrantMapping {
        if let offset = notify.byteOffset, !(0..<xenPageSize).contains(offset) {
            throw .invalidNotifyOffset(offset)
        }
        let buffer = try mapView(granter: granter, refs: [ref], writable: writable)
        let hypervisor = self.hypervisor
        let mapper = domain
        return GrantMapping(
            buffer: buffer, domain: granter, refs: [ref], writable: writable,
            unmap: { () throws(GrantTableError) in
                hypervisor.fireUnmapNotification(notify, page: buffer, from: mapper)
                hypervisor.unmap(granter: granter, refs: [ref])
            }
        )
    }

    /// Checks and counts the mappings of `grantRefs` and returns one contiguous view retaining their memory.
    private func mapView(
        granter: DomainID, refs grantRefs: [GrantRef], writable: Bool
    ) throws(GrantTableError) -> PageBuffer {
        guard !grantRefs.isEmpty else { throw .invalidCount(0) }
        let mapper = domain
        let result: Result<PageBuffer, GrantTableError> = hypervisor.state.withLock { state in
            guard state.domains[mapper] != nil else { return .failure(.noSuchDomain(mapper)) }
            guard let record = state.domains[granter] else { return .failure(.noSuchDomain(granter)) }
            var pages: [PageBuffer] = []
            for ref in grantRefs {
                guard let entry = record.grants[ref.rawValue], !entry.unsharePending else {
                    return .failure(.notGranted(domain: granter, ref: ref))
                }
                guard entry.grantee == mapper else {
                    return .failure(.wrongDomain(ref: ref, grantee: entry.grantee, mapper: mapper))
                }
                guard !writable || entry.writable else { return .failure(.readOnly(domain: granter, ref: ref)) }
                pages.append(entry.page)
            }
            // One contiguous view: consecutive pages of a single storage (the simulator cannot remap memory).
            let first = pages[0]
            for (index, page) in pages.enumerated()
            where page.storage !== first.storage || page.offset != first.offset + index * xenPageSize {
                return .failure(.notContiguous(grantRefs))
            }
            guard first.offset + pages.count * xenPageSize <= first.storage.byteCount else {
                return .failure(.notContiguous(grantRefs))
            }
            for ref in grantRefs { state.domains[granter]?.grants[ref.rawValue]?.mappings += 1 }
            return .success(PageBuffer(storage: first.storage, offset: first.offset, count: pages.count * xenPageSize))
        }
        let view = try result.get()
        // The mapping's own storage retains the granter's memory, so it outlives the grant and the granter.
        let storage = PageStorage(borrowing: view.pointer, byteCount: view.count, owner: view.storage)
        return PageBuffer(storage: storage)
    }
}

extension SimulatedHypervisor {
    /// Drops one mapping of each ref; frees refs whose unshare was waiting for the last mapping.
    func unmap(granter: DomainID, refs: [GrantRef]) {
        let freed: (GrantRefPool, [GrantRef])? = state.withLock { state in
            guard var record = state.domains[granter] else { return nil }
            var freed: [GrantRef] = []
            for ref in refs {
                guard var entry = record.grants[ref.rawValue], entry.mappings > 0 else { continue }
                entry.mappings -= 1
                if entry.mappings == 0, entry.unsharePending {
                    record.grants[ref.rawValue] = nil
                    freed.append(ref)
                } else {
                    record.grants[ref.rawValue] = entry
                }
            }
            state.domains[granter] = record
            return (record.pool, freed)
        }
        if let (pool, refs) = freed, !refs.isEmpty { pool.put(refs) }
    }

    /// Revokes gntshr grants: at once when unmapped, else when the last mapping goes (gntalloc semantics).
    func unshare(granter: DomainID, refs: [GrantRef]) {
        let freed: (GrantRefPool, [GrantRef])? = state.withLock { state in
            guard var record = state.domains[granter] else { return nil }
            var freed: [GrantRef] = []
            for ref in refs {
                guard var entry = record.grants[ref.rawValue], !entry.unsharePending else { continue }
                if entry.mappings == 0 {
                    record.grants[ref.rawValue] = nil
                    freed.append(ref)
                } else {
                    entry.unsharePending = true
                    record.grants[ref.rawValue] = entry
                }
            }
            state.domains[granter] = record
            return (record.pool, freed)
        }
        if let (pool, refs) = freed, !refs.isEmpty { pool.put(refs) }
    }

    /// Runs an armed unmap notification as the kernel would: clears the byte, then signals the port of
    /// `domain` (skipped when that domain is gone, as a dead domain's kernel sends nothing).
    func fireUnmapNotification(_ notify: UnmapNotification, page: PageBuffer, from domain: DomainID) {
        if let offset = notify.byteOffset { page.setUInt8(0, at: offset) }
        if let port = notify.port, let owner = self.domain(domain) { try? owner.eventChannel.notify(port) }
    }

    /// Whether `granter`'s grant `ref` exists and how many mappings it has (nil: no grant). For tests.
    ///
    /// Not in OCaml (introspection of the simulated table).
    public func grantMappingCount(granter: DomainID, ref: GrantRef) -> Int? {
        state.withLock { $0.domains[granter]?.grants[ref.rawValue]?.mappings }
    }
}

// MARK: - gntshr

/// A gntshr interface of one simulated domain: allocates pages and grants them in one call.
///
/// Like gntalloc, an unshare while the other side still maps the pages revokes the grants only when it
/// unmaps. OCaml: `Gnt.Gntshr.interface`
public final class SimulatedGntshr: UnmapNotifyingGntshr {
    let hypervisor: SimulatedHypervisor
    /// The sharing domain.
    public let domain: DomainID
    let refs: GrantRefPool
    private let closed = Mutex(false)

    init(hypervisor: SimulatedHypervisor, domain: DomainID, refs: GrantRefPool) {
        self.hypervisor = hypervisor
        self.domain = domain
        self.refs = refs
    }

    /// OCaml: `Gnt.Gntshr.share_pages_exn`
    public func sharePages(with grantee: DomainID, count: Int, writable: Bool) throws(GrantTableError) -> SharedPages {
        let (grantRefs, buffer) = try grantFreshPages(to: grantee, count: count, writable: writable)
        let hypervisor = self.hypervisor
        let granter = domain
        return SharedPages(
            refs: grantRefs, buffer: buffer, domain: grantee, writable: writable,
            unshare: { () throws(GrantTableError) in hypervisor.unshare(granter: granter, refs: grantRefs) }
        )
    }

    /// Shares one page and arms `notify` for the unshare, as gntalloc does (also when the other side still
    /// maps it).
    ///
    /// OCaml: none; C: `xengntshr_share_page_notify`
    public func sharePage(
        with grantee: DomainID, writable: Bool, notify: UnmapNotification
    ) throws(GrantTableError) -> SharedPages {
        if let offset = notify.byteOffset, !(0..<xenPageSize).contains(offset) {
            throw .invalidNotifyOffset(offset)
        }
        let (grantRefs, buffer) = try grantFreshPages(to: grantee, count: 1, writable: writable)
        let hypervisor = self.hypervisor
        let granter = domain
        return SharedPages(
            refs: grantRefs, buffer: buffer, domain: grantee, writable: writable,
            unshare: { () throws(GrantTableError) in
                hypervisor.fireUnmapNotification(notify, page: buffer, from: granter)
                hypervisor.unshare(granter: granter, refs: grantRefs)
            }
        )
    }

    /// Allocates `count` zeroed pages and grants each to `grantee`, all or nothing.
    private func grantFreshPages(
        to grantee: DomainID, count: Int, writable: Bool
    ) throws(GrantTableError) -> ([GrantRef], PageBuffer) {
        guard count > 0 else { throw .invalidCount(count) }
        if closed.withLock({ $0 }) { throw .closed }
        let grantRefs = refs.getNonblocking(count: count)
        guard !grantRefs.isEmpty else { throw count > refs.capacity ? .invalidCount(count) : .tableFull }
        let buffer = PageBuffer(pages: count)
        let table = SimulatedGrantTable(hypervisor: hypervisor, domain: domain, refs: refs)
        for (index, ref) in grantRefs.enumerated() {
            do {
                try table.grantAccess(
                    ref, to: grantee, writable: writable,
                    page: buffer.slice(from: index * xenPageSize, count: xenPageSize))
            } catch {
                for granted in grantRefs.prefix(index) { try? table.endAccess(granted) }
                refs.put(grantRefs)
                throw error
            }
        }
        return (grantRefs, buffer)
    }

    /// OCaml: `Gnt.Gntshr.interface_close`
    public func close() { closed.withLock { $0 = true } }
}
