public import GrantTable
import Synchronization
public import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// One simulated domain's grant table: both the export and the import side.
///
/// Grants enforce the granted domid and writability. A mapping is the granting domain's very memory, mapped
/// a second time at an address of the mapper's own (as Xen maps a foreign frame): pages from
/// ``allocatePages(_:)`` or a gntshr share can be mapped that way, in any order and any number. When the
/// mapping is released (its last `PageBuffer` view gone) that address is fenced: turned inaccessible and
/// never reused, so a stale pointer traps (see ``SimulatedHypervisor/fenceReleasedPages``). Pages granted
/// from other memory (a plain `PageBuffer`) are shown at their own address instead, which cannot be fenced
/// and needs `mapv` refs to be consecutive pages of one buffer (else `.notContiguous`). The memory is not
/// write-protected for read-only mappings: the simulator refuses writable *maps* of read-only grants, but
/// cannot trap stray writes through a read-only mapping.
/// OCaml: `Xen_os.Xen.Export` + `Xen_os.Xen.Import` of one domain
public struct SimulatedGrantTable: UnmapNotifyingGrantTable {
    let hypervisor: SimulatedHypervisor
    /// The domain this table belongs to.
    public let domain: DomainID
    /// This domain's free grant references.
    public let refs: GrantRefPool

    /// Shared-memory pages, so that a grant of them can be mapped at the mapper's own (fenceable) address.
    ///
    /// OCaml: `Io_page.get`
    public func allocatePages(_ count: Int) -> PageBuffer {
        precondition(count > 0, "allocatePages needs at least one page")
        let bytes = count * xenPageSize
        guard let base = PageMemory.mapShared(byteCount: bytes) else {
            fatalError("mmap(\(bytes), MAP_SHARED | MAP_ANONYMOUS) failed: errno \(errno)")
        }
        let hypervisor = self.hypervisor
        let id = hypervisor.recordMemory(
            .allocation, domain: domain, peer: nil, refs: [], address: base, byteCount: bytes)
        // Freed (and fenced) when the last view goes, like any released page of the simulator.
        return PageBuffer(
            storage: PageStorage(borrowingShared: base, byteCount: bytes) { base, bytes in
                hypervisor.release(base, byteCount: bytes)
                hypervisor.recordReleased(id)
            })
    }

    /// OCaml: `Xen_os.Xen.Export.grant_access`
    public func grantAccess(
        _ ref: GrantRef, to grantee: DomainID, writable: Bool, page: PageBuffer
    ) throws(GrantTableError) {
        guard Int(ref.rawValue) < hypervisor.grantTableSize else { throw .invalidRef(ref) }
        guard page.isPageAligned, page.count >= xenPageSize else {
            throw .invalidPage(offset: page.offset, count: page.count)
        }
        // The grant keeps the page alive, as Xen keeps a granted frame referenced.
        let entry = SimulatedHypervisor.GrantEntry(
            grantee: grantee, writable: writable, memory: .page(page.slice(from: 0, count: xenPageSize)))
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
        // The entry leaves the lock before it is dropped: its page may be the last view of memory whose
        // release takes the lock again.
        let outcome: Result<SimulatedHypervisor.GrantEntry, GrantTableError> = hypervisor.state.withLock { state in
            guard let record = state.domains[domain] else { return .failure(.noSuchDomain(domain)) }
            guard let entry = record.grants[ref.rawValue], !entry.unsharePending else {
                return .failure(.notGranted(domain: domain, ref: ref))
            }
            guard entry.mappings == 0 else { return .failure(.busy(ref)) }
            state.domains[domain]?.grants[ref.rawValue] = nil
            return .success(entry)
        }
        _ = try outcome.get()
    }

    /// OCaml: `Xen_os.Xen.Import.map_exn`
    public func map(domain granter: DomainID, ref: GrantRef, writable: Bool) throws(GrantTableError) -> GrantMapping {
        try mapv(domain: granter, refs: [ref], writable: writable)
    }

    /// OCaml: `Xen_os.Xen.Import.mapv_exn`
    public func mapv(
        domain granter: DomainID, refs grantRefs: [GrantRef], writable: Bool
    ) throws(GrantTableError) -> GrantMapping {
        try mapPages(granter: granter, refs: grantRefs, writable: writable, beforeUnmap: nil)
    }

    /// Maps `grantRefs`; `beforeUnmap` runs on the mapped address just before the mapping goes (an unmap
    /// notification).
    func mapPages(
        granter: DomainID, refs grantRefs: [GrantRef], writable: Bool,
        beforeUnmap: (@Sendable (UnsafeMutableRawPointer) -> Void)?
    ) throws(GrantTableError) -> GrantMapping {
        guard !grantRefs.isEmpty else { throw .invalidCount(0) }
        let mapper = domain
        let result: Result<[GrantedMemory], GrantTableError> = hypervisor.state.withLock { state in
            guard state.domains[mapper] != nil else { return .failure(.noSuchDomain(mapper)) }
            guard let record = state.domains[granter] else { return .failure(.noSuchDomain(granter)) }
            var memory: [GrantedMemory] = []
            for ref in grantRefs {
                guard let entry = record.grants[ref.rawValue], !entry.unsharePending else {
                    return .failure(.notGranted(domain: granter, ref: ref))
                }
                guard entry.grantee == mapper else {
                    return .failure(.wrongDomain(ref: ref, grantee: entry.grantee, mapper: mapper))
                }
                guard !writable || entry.writable else { return .failure(.readOnly(domain: granter, ref: ref)) }
                memory.append(entry.memory)
            }
            if !memory.allSatisfy(\.isShareable), GrantedMemory.contiguousView(memory) == nil {
                return .failure(.notContiguous(grantRefs))
            }
            for ref in grantRefs { state.domains[granter]?.grants[ref.rawValue]?.mappings += 1 }
            return .success(memory)
        }
        let memory = try result.get()
        let hypervisor = self.hypervisor
        let undo: @Sendable () -> Void = { hypervisor.unmap(granter: granter, refs: grantRefs) }
        guard memory.allSatisfy(\.isShareable) else {
            // Memory that cannot be mapped twice is shown where it is (the view keeps it alive).
            guard let view = GrantedMemory.contiguousView(memory) else {
                undo()
                throw .notContiguous(grantRefs)
            }
            let id = hypervisor.recordMemory(
                .mapping, domain: mapper, peer: granter, refs: grantRefs, address: view.pointer, byteCount: view.count)
            return GrantMapping(
                address: view.pointer, domain: granter, refs: grantRefs, writable: writable, shareable: false,
                unmap: { () throws(GrantTableError) in
                    withExtendedLifetime(view) {
                        beforeUnmap?(view.pointer)
                        undo()
                    }
                    hypervisor.recordReleased(id)
                })
        }
        let bytes = memory.count * xenPageSize
        guard let region = PageMemory.reserve(byteCount: bytes) else {
            undo()
            throw .system(operation: "mmap (reserve a mapping)", errno: errno)
        }
        for (index, page) in memory.enumerated()
        where !PageMemory.alias(page.address, byteCount: xenPageSize, into: region + index * xenPageSize) {
            let code = errno
            hypervisor.release(region, byteCount: bytes)
            undo()
            throw .system(operation: "mremap (map a granted page)", errno: code)
        }
        let bits = Int(bitPattern: region)
        let id = hypervisor.recordMemory(
            .mapping, domain: mapper, peer: granter, refs: grantRefs, address: region, byteCount: bytes)
        return GrantMapping(
            address: region, domain: granter, refs: grantRefs, writable: writable, shareable: true,
            unmap: { () throws(GrantTableError) in
                if let region = UnsafeMutableRawPointer(bitPattern: bits) {
                    beforeUnmap?(region)
                    hypervisor.release(region, byteCount: bytes)
                }
                undo()
                hypervisor.recordReleased(id)
            })
    }
}

// MARK: - Granted memory

/// The memory behind one grant: a page the granter owns (`grant_access`, kept alive while granted), or a
/// page of a gntshr share (the simulator's own mapping of the shared pages, so the sharer's address can be
/// fenced at unshare while the grantee still maps them).
enum GrantedMemory: Sendable {
    case page(PageBuffer)
    case shared(SharedBacking, index: Int)

    /// The page's address in this process.
    var address: UnsafeMutableRawPointer {
        switch self {
        case .page(let page): page.pointer
        case .shared(let backing, let index): backing.base + index * xenPageSize
        }
    }

    /// Whether it can be mapped a second time at another address.
    var isShareable: Bool {
        switch self {
        case .page(let page): page.storage.isShareable
        case .shared: true
        }
    }

    /// One view over `memory` when it is consecutive pages of one buffer, else nil.
    static func contiguousView(_ memory: [GrantedMemory]) -> PageBuffer? {
        var pages: [PageBuffer] = []
        for item in memory {
            guard case .page(let page) = item else { return nil }
            pages.append(page)
        }
        guard let first = pages.first else { return nil }
        for (index, page) in pages.enumerated()
        where page.storage !== first.storage || page.offset != first.offset + index * xenPageSize {
            return nil
        }
        guard first.offset + pages.count * xenPageSize <= first.storage.byteCount else { return nil }
        return PageBuffer(storage: first.storage, offset: first.offset, count: pages.count * xenPageSize)
    }
}

/// The simulator's own mapping of a gntshr share's pages; unmapped when the last grant of it is gone (each
/// mapper's mapping keeps the pages themselves).
final class SharedBacking: @unchecked Sendable {
    // @unchecked: immutable after init; the memory is what the grants share.
    let base: UnsafeMutableRawPointer
    let byteCount: Int

    init?(pages: Int) {
        guard let base = PageMemory.mapShared(byteCount: pages * xenPageSize) else { return nil }
        self.base = base
        self.byteCount = pages * xenPageSize
    }

    deinit { _ = munmap(base, byteCount) }
}

extension SimulatedHypervisor {
    /// Releases an address range this process no longer uses for a mapping or share: fenced for good, or
    /// unmapped when fencing is off.
    func release(_ base: UnsafeMutableRawPointer, byteCount: Int) {
        if fenceReleasedPages, PageMemory.fence(base, byteCount: byteCount) { return }
        _ = munmap(base, byteCount)
    }

    /// Drops one mapping of each ref; frees refs whose unshare was waiting for the last mapping.
    func unmap(granter: DomainID, refs: [GrantRef]) {
        // Removed entries are dropped outside the lock (see `endAccess`).
        let freed: (GrantRefPool, [GrantRef], [GrantEntry])? = state.withLock { state in
            guard var record = state.domains[granter] else { return nil }
            var freed: [GrantRef] = []
            var removed: [GrantEntry] = []
            for ref in refs {
                guard var entry = record.grants[ref.rawValue], entry.mappings > 0 else { continue }
                entry.mappings -= 1
                if entry.mappings == 0, entry.unsharePending {
                    record.grants[ref.rawValue] = nil
                    freed.append(ref)
                    removed.append(entry)
                } else {
                    record.grants[ref.rawValue] = entry
                }
            }
            state.domains[granter] = record
            return (record.pool, freed, removed)
        }
        if let (pool, refs, _) = freed, !refs.isEmpty { pool.put(refs) }
    }

    /// Revokes gntshr grants: at once when unmapped, else when the last mapping goes (gntalloc semantics).
    func unshare(granter: DomainID, refs: [GrantRef]) {
        // Removed entries are dropped outside the lock (see `endAccess`).
        let freed: (GrantRefPool, [GrantRef], [GrantEntry])? = state.withLock { state in
            guard var record = state.domains[granter] else { return nil }
            var freed: [GrantRef] = []
            var removed: [GrantEntry] = []
            for ref in refs {
                guard var entry = record.grants[ref.rawValue], !entry.unsharePending else { continue }
                if entry.mappings == 0 {
                    record.grants[ref.rawValue] = nil
                    freed.append(ref)
                    removed.append(entry)
                } else {
                    entry.unsharePending = true
                    record.grants[ref.rawValue] = entry
                }
            }
            state.domains[granter] = record
            return (record.pool, freed, removed)
        }
        if let (pool, refs, _) = freed, !refs.isEmpty { pool.put(refs) }
    }

    /// Whether `granter`'s grant `ref` exists and how many mappings it has (nil: no grant). For tests.
    ///
    /// OCaml: none (introspection of the simulated table)
    public func grantMappingCount(granter: DomainID, ref: GrantRef) -> Int? {
        state.withLock { $0.domains[granter]?.grants[ref.rawValue]?.mappings }
    }

    /// Every grant `granter` has made, with its mapping count. For tests that check nothing leaked.
    ///
    /// OCaml: none (introspection of the simulated table)
    public func grants(of granter: DomainID) -> [GrantRef: Int] {
        state.withLock { state in
            var result: [GrantRef: Int] = [:]
            for (ref, entry) in state.domains[granter]?.grants ?? [:] {
                result[GrantRef(rawValue: ref)] = entry.mappings
            }
            return result
        }
    }
}

// MARK: - gntshr

/// A gntshr interface of one simulated domain: allocates pages and grants them in one call.
///
/// Like gntalloc, an unshare while the other side still maps the pages revokes the grants only when it
/// unmaps. The sharer's own address is released (fenced) at unshare, when its last view is gone.
/// OCaml: `Gnt.Gntshr.interface`
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
        try sharePages(with: grantee, count: count, writable: writable, beforeUnshare: nil)
    }

    /// Shares `count` fresh pages; `beforeUnshare` runs on the sharer's address just before the share goes
    /// (an unmap notification).
    func sharePages(
        with grantee: DomainID, count: Int, writable: Bool,
        beforeUnshare: (@Sendable (UnsafeMutableRawPointer) -> Void)?
    ) throws(GrantTableError) -> SharedPages {
        guard count > 0, count <= Int(Int32.max) / xenPageSize else { throw .invalidCount(count) }
        if closed.withLock({ $0 }) { throw .closed }
        let grantRefs = refs.getNonblocking(count: count)
        guard !grantRefs.isEmpty else { throw count > refs.capacity ? .invalidCount(count) : .tableFull }
        let bytes = count * xenPageSize
        guard let backing = SharedBacking(pages: count),
            let view = PageMemory.reserve(byteCount: bytes)
        else {
            refs.put(grantRefs)
            throw .system(operation: "mmap (share pages)", errno: errno)
        }
        guard PageMemory.alias(backing.base, byteCount: bytes, into: view) else {
            let code = errno
            _ = munmap(view, bytes)
            refs.put(grantRefs)
            throw .system(operation: "mremap (share pages)", errno: code)
        }
        let granter = domain
        let failure: GrantTableError? = hypervisor.state.withLock { state in
            guard state.domains[granter] != nil else { return .noSuchDomain(granter) }
            for ref in grantRefs where state.domains[granter]?.grants[ref.rawValue] != nil {
                return .alreadyGranted(ref)
            }
            for (index, ref) in grantRefs.enumerated() {
                state.domains[granter]?.grants[ref.rawValue] = SimulatedHypervisor.GrantEntry(
                    grantee: grantee, writable: writable, memory: .shared(backing, index: index))
            }
            return nil
        }
        if let failure {
            _ = munmap(view, bytes)
            refs.put(grantRefs)
            throw failure
        }
        let hypervisor = self.hypervisor
        let bits = Int(bitPattern: view)
        let id = hypervisor.recordMemory(
            .share, domain: granter, peer: grantee, refs: grantRefs, address: view, byteCount: bytes)
        return SharedPages(
            refs: grantRefs, address: view, domain: grantee, writable: writable, shareable: true,
            unshare: { () throws(GrantTableError) in
                if let view = UnsafeMutableRawPointer(bitPattern: bits) {
                    beforeUnshare?(view)
                    hypervisor.release(view, byteCount: bytes)
                }
                hypervisor.unshare(granter: granter, refs: grantRefs)
                hypervisor.recordReleased(id)
            }
        )
    }

    /// OCaml: `Gnt.Gntshr.interface_close`
    public func close() { closed.withLock { $0 = true } }
}
