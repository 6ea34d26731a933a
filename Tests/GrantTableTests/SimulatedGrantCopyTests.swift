import GrantTable
import SimulatedHypervisor
import Testing
import XenCore

/// Grant copy on the simulator: bytes move without a mapping, and every check `GNTTABOP_copy` makes.
@Suite struct SimulatedGrantCopyTests {
    let hypervisor = SimulatedHypervisor(grantTableSize: 16)
    let front: SimulatedDomain
    let back: SimulatedDomain
    let other: SimulatedDomain

    init() throws {
        front = try hypervisor.createDomain(name: "front")
        back = try hypervisor.createDomain(name: "back")
        other = try hypervisor.createDomain(name: "other")
    }

    @Test func copiesBothWaysWithoutMapping() throws {
        let page = PageBuffer(pages: 1)
        for index in 0..<4096 { page.setUInt8(UInt8(truncatingIfNeeded: index), at: index) }
        try front.grantTable.grantAccess(8, to: back.id, writable: true, page: page)
        let local = PageBuffer(pages: 2)
        // From the foreign page (offset 100) into a local view that crosses a page boundary.
        try back.grantTable.copy([
            GrantCopySegment(
                from: .foreign(domain: front.id, ref: 8, offset: 100), to: .local(local.slice(from: 4000, count: 200)),
                length: 200)
        ])
        #expect(local.slice(from: 4000, count: 200).bytes == Array(page.slice(from: 100, count: 200).bytes))
        // And back into the foreign page at offset 3000.
        local.slice(from: 0, count: 96).fill(0xEE)
        try back.grantTable.copy([
            GrantCopySegment(
                from: .local(local.slice(from: 0, count: 96)), to: .foreign(domain: front.id, ref: 8, offset: 3000),
                length: 96)
        ])
        #expect(page.slice(from: 3000, count: 96).bytes.allSatisfy { $0 == 0xEE })
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 0, "nothing stays mapped")
        try front.grantTable.endAccess(8)
    }

    @Test func refusesWhatXenRefuses() throws {
        let page = PageBuffer(pages: 1)
        try front.grantTable.grantAccess(8, to: back.id, writable: false, page: page)
        let local = PageBuffer(pages: 1)
        #expect(throws: GrantTableError.readOnly(domain: front.id, ref: 8)) {
            try back.grantTable.copy([
                GrantCopySegment(from: .local(local), to: .foreign(domain: front.id, ref: 8, offset: 0), length: 10)
            ])
        }
        #expect(throws: GrantTableError.wrongDomain(ref: 8, grantee: back.id, mapper: other.id)) {
            try other.grantTable.copy([
                GrantCopySegment(from: .foreign(domain: front.id, ref: 8, offset: 0), to: .local(local), length: 10)
            ])
        }
        #expect(throws: GrantTableError.notGranted(domain: front.id, ref: 9)) {
            try back.grantTable.copy([
                GrantCopySegment(from: .foreign(domain: front.id, ref: 9, offset: 0), to: .local(local), length: 10)
            ])
        }
        #expect(throws: GrantTableError.invalidPage(offset: 4000, count: 200)) {
            try back.grantTable.copy([
                GrantCopySegment(from: .foreign(domain: front.id, ref: 8, offset: 4000), to: .local(local), length: 200)
            ])
        }
        #expect(throws: GrantTableError.invalidPage(offset: 0, count: 10)) {
            try back.grantTable.copy([
                GrantCopySegment(
                    from: .foreign(domain: front.id, ref: 8, offset: 0), to: .local(local.slice(from: 0, count: 10)),
                    length: 20)
            ])
        }
        #expect(throws: GrantTableError.unsupported(operation: "grant copy needs exactly one foreign end")) {
            try back.grantTable.copy([GrantCopySegment(from: .local(local), to: .local(local), length: 1)])
        }
        #expect(throws: GrantTableError.invalidCount(5000)) {
            try back.grantTable.copy([
                GrantCopySegment(from: .foreign(domain: front.id, ref: 8, offset: 0), to: .local(local), length: 5000)
            ])
        }
    }
}
