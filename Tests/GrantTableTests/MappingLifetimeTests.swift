import GrantTable
import SimulatedHypervisor
import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The ownership rules of grant mappings and shares: the pages live while any view does, an explicit release
/// under a live view is an error (never a silent unmap), and on the simulator a released range is fenced so
/// a late access through a stale pointer traps instead of touching reused memory.
@Suite struct MappingLifetimeTests {
    let hypervisor = SimulatedHypervisor(grantTableSize: 64)
    let front: SimulatedDomain
    let back: SimulatedDomain

    init() throws {
        front = try hypervisor.createDomain(name: "front")
        back = try hypervisor.createDomain(name: "back")
    }

    @Test func aMappingHasItsOwnAddressShowingTheGrantersMemory() throws {
        let page = front.grantTable.allocatePages(1)
        try front.grantTable.grantAccess(8, to: back.id, writable: true, page: page)
        let mapping = try back.grantTable.map(domain: front.id, ref: 8, writable: true)
        #expect(mapping.buffer.pointer != page.pointer)
        page.setUInt64(0x0123_4567_89ab_cdef, at: 16)
        #expect(mapping.buffer.uint64(at: 16) == 0x0123_4567_89ab_cdef)
        mapping.buffer.setUInt8(7, at: 4095)
        #expect(page.uint8(at: 4095) == 7)
        try mapping.unmap()
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 0)
    }

    @Test func mapvOfScatteredPagesIsOneContiguousBuffer() throws {
        // Xen maps any refs side by side; so does the simulator for pages it can map twice.
        let pages = (0..<3).map { _ in front.grantTable.allocatePages(1) }
        for (index, page) in pages.enumerated() {
            page.setUInt32(UInt32(100 + index), at: 0)
            try front.grantTable.grantAccess(
                GrantRef(rawValue: UInt32(20 - index)), to: back.id, writable: false, page: page)
        }
        let mapping = try back.grantTable.mapv(domain: front.id, refs: [20, 19, 18], writable: false)
        #expect(mapping.buffer.count == 3 * xenPageSize)
        #expect((0..<3).map { mapping.buffer.uint32(at: $0 * xenPageSize) } == [100, 101, 102])
        try mapping.unmap()
    }

    @Test func unmapWhileAViewIsAliveIsAnErrorAndTheViewStaysValid() throws {
        let page = front.grantTable.allocatePages(1)
        try front.grantTable.grantAccess(8, to: back.id, writable: true, page: page)
        let handle = GrantMappingHandle(try back.grantTable.map(domain: front.id, ref: 8, writable: true))
        var view: PageBuffer? = handle.buffer.slice(from: 100, count: 8)
        #expect(throws: GrantTableError.stillInUse(refs: [8])) { try handle.unmap() }
        // Not unmapped: the grant is still mapped and the view still shows the granter's memory.
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 1)
        view?.setUInt64(42, at: 0)
        #expect(page.uint64(at: 100) == 42)
        #expect(handle.isUnmapped)
        // The last view going releases it.
        view = nil
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 0)
        #expect(hypervisor.memoryRecords(of: back.id).allSatisfy { $0.released })
    }

    @Test func droppingAMappingUnmapsItOnceItsViewsAreGone() throws {
        try front.grantTable.grantAccess(8, to: back.id, writable: true, page: front.grantTable.allocatePages(1))
        var ring: PageBuffer?
        do {
            let mapping = try back.grantTable.map(domain: front.id, ref: 8, writable: true)
            ring = mapping.buffer
        }
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 1)
        ring = nil
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 0)
        _ = ring
    }

    @Test func unshareWhileAViewIsAliveWaitsForIt() throws {
        let gntshr = front.openGntshr()
        let share = SharedPagesHandle(try gntshr.sharePages(with: back.id, count: 2, writable: true))
        var view: PageBuffer? = share.buffer
        #expect(throws: GrantTableError.stillInUse(refs: share.refs)) { try share.unshare() }
        let mapping = try back.grantTable.mapv(domain: front.id, refs: share.refs, writable: true)
        view?.setUInt32(9, at: xenPageSize)
        #expect(mapping.buffer.uint32(at: xenPageSize) == 9)
        view = nil
        // The sharer let go; the grants go once the peer unmaps (gntalloc semantics).
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: share.refs[0]) == 1)
        try mapping.unmap()
        #expect(hypervisor.grants(of: front.id).isEmpty)
    }

    @Test func bufferOfAnUnmappedHandleTraps() async {
        await #expect(processExitsWith: .failure) {
            let hypervisor = SimulatedHypervisor()
            let front = try hypervisor.createDomain()
            let back = try hypervisor.createDomain()
            try front.grantTable.grantAccess(8, to: back.id, writable: true, page: front.grantTable.allocatePages(1))
            let handle = GrantMappingHandle(try back.grantTable.map(domain: front.id, ref: 8, writable: true))
            try handle.unmap()
            _ = handle.buffer
        }
    }

    // MARK: - A late access through a stale pointer traps (exit tests: each runs in a child process)

    @Test func useAfterUnmapTraps() async {
        await #expect(processExitsWith: .signal(SIGSEGV)) {
            let hypervisor = SimulatedHypervisor()
            let front = try hypervisor.createDomain()
            let back = try hypervisor.createDomain()
            try front.grantTable.grantAccess(8, to: back.id, writable: true, page: front.grantTable.allocatePages(1))
            let mapping = try back.grantTable.map(domain: front.id, ref: 8, writable: true)
            let stale = mapping.buffer.pointer
            try mapping.unmap()
            stale.storeBytes(of: 1, toByteOffset: 64, as: UInt8.self)
        }
    }

    @Test func useAfterUnshareTraps() async {
        await #expect(processExitsWith: .signal(SIGSEGV)) {
            let hypervisor = SimulatedHypervisor()
            let front = try hypervisor.createDomain()
            let back = try hypervisor.createDomain()
            let share = try front.openGntshr().sharePages(with: back.id, count: 1, writable: true)
            let stale = share.buffer.pointer
            try share.unshare()
            _ = stale.load(fromByteOffset: 8, as: UInt64.self)
        }
    }

    @Test func useOfAFreedGrantablePageTraps() async {
        await #expect(processExitsWith: .signal(SIGSEGV)) {
            let hypervisor = SimulatedHypervisor()
            let domain = try hypervisor.createDomain()
            var page: PageBuffer? = domain.grantTable.allocatePages(2)
            let stale = page!.pointer
            page = nil
            stale.storeBytes(of: 1, toByteOffset: xenPageSize + 1, as: UInt8.self)
        }
    }

    @Test func aReleasedRangeIsNeverHandedOutAgain() throws {
        var released: Set<Int> = []
        for round in 0..<64 {
            let ref = GrantRef(rawValue: UInt32(8 + round % 8))
            try front.grantTable.grantAccess(ref, to: back.id, writable: true, page: front.grantTable.allocatePages(1))
            let mapping = try back.grantTable.map(domain: front.id, ref: ref, writable: true)
            let address = Int(bitPattern: mapping.buffer.pointer)
            #expect(!released.contains(address))
            released.insert(address)
            try mapping.unmap()
            try front.grantTable.endAccess(ref)
        }
    }
}
