import GrantTable
import SimulatedHypervisor
import Testing
import XenCore

@Suite struct SimulatedGrantTests {
    let hypervisor = SimulatedHypervisor(grantTableSize: 16)
    let front: SimulatedDomain
    let back: SimulatedDomain

    init() throws {
        front = try hypervisor.createDomain(name: "front")
        back = try hypervisor.createDomain(name: "back")
    }

    @Test func grantedPageIsSharedMemoryBothWays() throws {
        let page = PageBuffer(pages: 1)
        let ref = try #require(front.grantTable.refs.getNonblocking())
        #expect(ref == 8)
        try front.grantTable.grantAccess(ref, to: back.id, writable: true, page: page)
        let mapping = try back.grantTable.map(domain: front.id, ref: ref, writable: true)
        #expect(mapping.buffer.count == xenPageSize)
        #expect(mapping.buffer.pointer == page.pointer)
        page.setUInt32(0xdead_beef, at: 0)
        #expect(mapping.buffer.uint32(at: 0) == 0xdead_beef)
        mapping.buffer.setUInt8(0x42, at: 4095)
        #expect(page.uint8(at: 4095) == 0x42)
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: ref) == 1)
        try mapping.unmap()
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: ref) == 0)
        try front.grantTable.endAccess(ref)
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: ref) == nil)
    }

    @Test func readOnlyGrantRefusesWritableMapping() throws {
        let page = PageBuffer(pages: 1)
        try front.grantTable.grantAccess(8, to: back.id, writable: false, page: page)
        #expect(throws: GrantTableError.readOnly(domain: front.id, ref: 8)) {
            _ = try back.grantTable.map(domain: front.id, ref: 8, writable: true)
        }
        let mapping = try back.grantTable.map(domain: front.id, ref: 8, writable: false)
        let writable = mapping.writable
        #expect(!writable)
        _ = consume mapping
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 0)
    }

    @Test func anotherDomainCannotMap() throws {
        let other = try hypervisor.createDomain(name: "other")
        try front.grantTable.grantAccess(8, to: back.id, writable: true, page: PageBuffer(pages: 1))
        #expect(throws: GrantTableError.wrongDomain(ref: 8, grantee: back.id, mapper: other.id)) {
            _ = try other.grantTable.map(domain: front.id, ref: 8, writable: false)
        }
        // The granter itself is not the grantee either.
        #expect(throws: GrantTableError.wrongDomain(ref: 8, grantee: back.id, mapper: front.id)) {
            _ = try front.grantTable.map(domain: front.id, ref: 8, writable: false)
        }
        #expect(throws: GrantTableError.notGranted(domain: front.id, ref: 9)) {
            _ = try back.grantTable.map(domain: front.id, ref: 9, writable: false)
        }
        #expect(throws: GrantTableError.noSuchDomain(DomainID(77))) {
            _ = try back.grantTable.map(domain: 77, ref: 8, writable: false)
        }
    }

    @Test func grantAccessValidatesRefsAndPages() throws {
        let table = front.grantTable
        let page = PageBuffer(pages: 2)
        try table.grantAccess(8, to: back.id, writable: true, page: page)
        #expect(throws: GrantTableError.alreadyGranted(8)) {
            try table.grantAccess(8, to: back.id, writable: true, page: page)
        }
        #expect(throws: GrantTableError.invalidRef(16)) {
            try table.grantAccess(16, to: back.id, writable: true, page: page)
        }
        #expect(throws: GrantTableError.invalidPage(offset: 1, count: 4096)) {
            try table.grantAccess(9, to: back.id, writable: true, page: page.slice(from: 1, count: 4096))
        }
        #expect(throws: GrantTableError.invalidPage(offset: 0, count: 100)) {
            try table.grantAccess(
                9, to: back.id, writable: true, page: PageBuffer(copying: [UInt8](repeating: 1, count: 100)))
        }
        #expect(throws: GrantTableError.notGranted(domain: front.id, ref: 9)) { try table.endAccess(9) }
        // Reserved refs can be granted explicitly (console 0, xenstore 1).
        try table.grantAccess(.reservedConsole, to: back.id, writable: true, page: page.slice(from: 4096, count: 4096))
    }

    @Test func endAccessWhileMappedIsRefusedAndRetryingVariantWaits() async throws {
        let table = front.grantTable
        let ref = try await table.refs.get()
        try table.grantAccess(ref, to: back.id, writable: true, page: PageBuffer(pages: 1))
        let handle = GrantMappingHandle(try back.grantTable.map(domain: front.id, ref: ref, writable: true))
        #expect(throws: GrantTableError.busy(ref)) { try table.endAccess(ref) }

        let free = table.refs.freeCount
        let ending = Task { try await table.endAccess(ref, retryingEvery: .milliseconds(1), releaseRef: true) }
        try handle.unmap()
        try handle.unmap()  // idempotent
        #expect(handle.isUnmapped)
        try await ending.value
        #expect(table.refs.freeCount == free + 1)
        #expect(throws: GrantTableError.notGranted(domain: front.id, ref: ref)) {
            _ = try back.grantTable.map(domain: front.id, ref: ref, writable: false)
        }
    }

    @Test func droppedMappingUnmapsExactlyOnce() throws {
        try front.grantTable.grantAccess(8, to: back.id, writable: true, page: PageBuffer(pages: 1))
        do {
            let first = try back.grantTable.map(domain: front.id, ref: 8, writable: true)
            let second = try back.grantTable.map(domain: front.id, ref: 8, writable: false)
            #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 2)
            try first.unmap()
            #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 1)
            _ = second.buffer.uint8(at: 0)
        }
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 0)
    }

    @Test func mapvOfContiguousPagesIsOneBufferAllOrNothing() throws {
        let ring = PageBuffer(pages: 3)
        let refs = front.grantTable.refs.getNonblocking(count: 3)
        for (ref, page) in zip(refs, ring.pages) {
            try front.grantTable.grantAccess(ref, to: back.id, writable: true, page: page)
        }
        let mapping = try back.grantTable.mapv(domain: front.id, refs: refs, writable: true)
        #expect(mapping.buffer.count == 3 * xenPageSize)
        mapping.buffer.setUInt64(7, at: 2 * xenPageSize + 8)
        #expect(ring.uint64(at: 2 * xenPageSize + 8) == 7)
        try mapping.unmap()

        // Out of order is not contiguous; a missing ref fails the whole call and maps nothing.
        #expect(throws: GrantTableError.notContiguous([refs[1], refs[0]])) {
            _ = try back.grantTable.mapv(domain: front.id, refs: [refs[1], refs[0]], writable: false)
        }
        #expect(throws: GrantTableError.notGranted(domain: front.id, ref: 15)) {
            _ = try back.grantTable.mapv(domain: front.id, refs: [refs[0], 15], writable: false)
        }
        #expect(throws: GrantTableError.invalidCount(0)) {
            _ = try back.grantTable.mapv(domain: front.id, refs: [], writable: false)
        }
        for ref in refs { #expect(hypervisor.grantMappingCount(granter: front.id, ref: ref) == 0) }
    }

    @Test func withGrantWithGrantsAndWithMappingCleanUpOnThrow() async throws {
        let table = front.grantTable
        let page = PageBuffer(pages: 2)
        await #expect(throws: TestFailure.self) {
            try await table.withGrant(8, to: back.id, writable: true, page: page) {
                let seen = try await back.grantTable.withMapping(domain: front.id, ref: 8, writable: true) { buffer in
                    buffer.setUInt8(9, at: 0)
                    return buffer.uint8(at: 0)
                }
                #expect(seen == 9)
                throw TestFailure()
            }
        }
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == nil)
        #expect(page.uint8(at: 0) == 9)

        await #expect(throws: TestFailure.self) {
            try await table.withGrants([8, 9], to: back.id, writable: false, pages: page.pages) {
                _ = try back.grantTable.mapv(domain: front.id, refs: [8, 9], writable: false)
                throw TestFailure()
            }
        }
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == nil)
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 9) == nil)

        await #expect(throws: TestFailure.self) {
            try await table.withGrant(10, to: back.id, writable: true, page: page) {
                try await back.grantTable.withMapping(domain: front.id, ref: 10, writable: true) { _ in
                    throw TestFailure()
                }
            }
        }
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 10) == nil)

        // A failing grant in withGrants revokes the ones already made.
        await #expect(throws: GrantTableError.alreadyGranted(12)) {
            try table.grantAccess(12, to: back.id, writable: true, page: page)
            try await table.withGrants([11, 12], to: back.id, writable: true, pages: page.pages) {}
        }
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 11) == nil)
    }

    @Test func gntshrSharesPagesAndDefersUnshareUntilUnmapped() throws {
        let gntshr = front.openGntshr()
        let shared = try gntshr.sharePages(with: back.id, count: 2, writable: true)
        #expect(shared.refs == [8, 9])
        #expect(front.grantTable.refs.freeCount == 6)
        let mapping = try back.grantTable.mapv(domain: front.id, refs: shared.refs, writable: true)
        mapping.buffer.setUInt16(0xabcd, at: 4096)
        #expect(shared.buffer.uint16(at: 4096) == 0xabcd)

        let handle = SharedPagesHandle(shared)
        try handle.unshare()
        // Still mapped: the grants live on (gntalloc semantics) but cannot be mapped anew.
        #expect(front.grantTable.refs.freeCount == 6)
        #expect(throws: GrantTableError.notGranted(domain: front.id, ref: 8)) {
            _ = try back.grantTable.map(domain: front.id, ref: 8, writable: false)
        }
        try mapping.unmap()
        #expect(front.grantTable.refs.freeCount == 8)
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == nil)
    }

    @Test func gntshrReportsFullTableAndClosedInterface() throws {
        let gntshr = front.openGntshr()
        let all = try gntshr.sharePages(with: back.id, count: 8, writable: false)
        #expect(throws: GrantTableError.tableFull) {
            _ = try gntshr.sharePages(with: back.id, count: 1, writable: false)
        }
        if let unexpected = gntshr.sharePagesIfPossible(with: back.id, count: 1, writable: false) {
            Issue.record("shared \(unexpected.refs) from a full table")
        }
        #expect(throws: GrantTableError.invalidCount(0)) {
            _ = try gntshr.sharePages(with: back.id, count: 0, writable: false)
        }
        try all.unshare()
        #expect(front.grantTable.refs.freeCount == 8)

        front.withGntshr { interface in
            if let shared = interface.sharePagesIfPossible(with: back.id, count: 1, writable: true) {
                #expect(shared.refs.count == 1)
                #expect(front.grantTable.refs.freeCount == 7)
            } else {
                Issue.record("share failed")
            }
            interface.close()
            #expect(throws: GrantTableError.closed) {
                _ = try interface.sharePages(with: back.id, count: 1, writable: true)
            }
        }
        // The share dropped inside the closure was unshared when it went away.
        #expect(front.grantTable.refs.freeCount == 8)
    }

    @Test func destroyedGranterKeepsExistingMappingsValid() throws {
        let page = PageBuffer(pages: 1)
        try front.grantTable.grantAccess(8, to: back.id, writable: true, page: page)
        let mapping = try back.grantTable.map(domain: front.id, ref: 8, writable: true)
        #expect(hypervisor.destroyDomain(front.id))
        mapping.buffer.setUInt8(1, at: 0)
        #expect(page.uint8(at: 0) == 1)
        try mapping.unmap()
        #expect(throws: GrantTableError.noSuchDomain(front.id)) {
            try front.grantTable.grantAccess(9, to: back.id, writable: true, page: page)
        }
        #expect(throws: GrantTableError.noSuchDomain(front.id)) {
            _ = try back.grantTable.map(domain: front.id, ref: 8, writable: true)
        }
    }
}
