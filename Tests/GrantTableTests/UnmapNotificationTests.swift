import EventChannel
import GrantTable
import SimulatedHypervisor
import Testing
import XenCore

/// The simulated kernel's unmap notifications (gntalloc's on unshare, gntdev's on unmap): one byte of the
/// page cleared, one event sent, also when the other side still maps the page.
@Suite struct UnmapNotificationTests {
    let hypervisor = SimulatedHypervisor(grantTableSize: 32)
    let sharer: SimulatedDomain
    let mapper: SimulatedDomain

    init() throws {
        sharer = try hypervisor.createDomain(name: "sharer")
        mapper = try hypervisor.createDomain(name: "mapper")
    }

    /// A port pair: the sharer's unbound port and the mapper's end bound to it.
    private func ports() throws -> (sharer: EventChannelPort, mapper: EventChannelPort) {
        let local = try sharer.eventChannel.bindUnboundPort(remote: mapper.id)
        return (local, try mapper.eventChannel.bindInterdomain(remote: sharer.id, remotePort: local))
    }

    @Test func unshareClearsTheByteAndSignals() throws {
        let (sharerPort, mapperPort) = try ports()
        let shared = try sharer.openGntshr().sharePage(
            with: mapper.id, writable: true, notify: UnmapNotification(byteOffset: 21, port: sharerPort))
        let ref = shared.refs[0]
        let mapping = try mapper.grantTable.map(domain: sharer.id, ref: ref, writable: true)
        mapping.buffer.setUInt8(1, at: 21)
        mapping.buffer.setUInt8(7, at: 22)
        #expect(!mapper.eventChannel.isPending(mapperPort))
        try shared.unshare()
        #expect(mapping.buffer.uint8(at: 21) == 0, "cleared while the peer still maps it")
        #expect(mapping.buffer.uint8(at: 22) == 7, "only that byte")
        #expect(mapper.eventChannel.isPending(mapperPort), "the peer got an event")
        #expect(hypervisor.grantMappingCount(granter: sharer.id, ref: ref) == 1, "revoked only after unmap")
        try mapping.unmap()
        #expect(hypervisor.grantMappingCount(granter: sharer.id, ref: ref) == nil)
    }

    @Test func unmapClearsTheByteAndSignals() throws {
        let (sharerPort, mapperPort) = try ports()
        let shared = try sharer.openGntshr().sharePages(with: mapper.id, count: 1, writable: true)
        let mapping = try mapper.grantTable.map(
            domain: sharer.id, ref: shared.refs[0], writable: true,
            notify: UnmapNotification(byteOffset: 20, port: mapperPort))
        shared.buffer.setUInt8(1, at: 20)
        do { _ = consume mapping }  // dropped, as when the mapping process dies
        #expect(shared.buffer.uint8(at: 20) == 0)
        #expect(sharer.eventChannel.isPending(sharerPort))
        try shared.unshare()
    }

    /// The peer watches through its own mapping: the sharer keeps no view past its unshare.
    @Test func byteOnlyOrEventOnly() throws {
        let (sharerPort, mapperPort) = try ports()
        let byteOnly = try sharer.openGntshr().sharePage(
            with: mapper.id, writable: true, notify: UnmapNotification(byteOffset: 0, port: nil))
        let first = try mapper.grantTable.map(domain: sharer.id, ref: byteOnly.refs[0], writable: true)
        first.buffer.setUInt8(9, at: 0)
        try byteOnly.unshare()
        #expect(first.buffer.uint8(at: 0) == 0)
        #expect(!mapper.eventChannel.isPending(mapperPort))
        try first.unmap()
        let eventOnly = try sharer.openGntshr().sharePage(
            with: mapper.id, writable: true, notify: UnmapNotification(byteOffset: nil, port: sharerPort))
        let second = try mapper.grantTable.map(domain: sharer.id, ref: eventOnly.refs[0], writable: true)
        second.buffer.setUInt8(9, at: 0)
        try eventOnly.unshare()
        #expect(second.buffer.uint8(at: 0) == 9)
        #expect(mapper.eventChannel.isPending(mapperPort))
        try second.unmap()
    }

    @Test func offsetOutsideThePage() throws {
        #expect(throws: GrantTableError.invalidNotifyOffset(4096)) {
            _ = try sharer.openGntshr().sharePage(
                with: mapper.id, writable: true, notify: UnmapNotification(byteOffset: 4096, port: nil))
        }
        let shared = try sharer.openGntshr().sharePages(with: mapper.id, count: 1, writable: true)
        #expect(throws: GrantTableError.invalidNotifyOffset(-1)) {
            _ = try mapper.grantTable.map(
                domain: sharer.id, ref: shared.refs[0], writable: true,
                notify: UnmapNotification(byteOffset: -1, port: nil))
        }
        #expect(hypervisor.grantMappingCount(granter: sharer.id, ref: shared.refs[0]) == 0, "nothing mapped")
        try shared.unshare()
    }

    /// A destroyed domain's kernel sends nothing: the byte is not cleared by anyone and no event comes.
    @Test func destroyedDomainSendsNothing() throws {
        let (sharerPort, mapperPort) = try ports()
        let shared = try sharer.openGntshr().sharePages(with: mapper.id, count: 1, writable: true)
        let mapping = try mapper.grantTable.map(
            domain: sharer.id, ref: shared.refs[0], writable: true,
            notify: UnmapNotification(byteOffset: nil, port: mapperPort))
        hypervisor.destroyDomain(mapper.id)
        try? mapping.unmap()
        #expect(!sharer.eventChannel.isPending(sharerPort))
        try shared.unshare()
    }
}
