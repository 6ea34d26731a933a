import EventChannel
import GrantTable
import SimulatedHypervisor
import Synchronization
import Testing
import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#endif

/// The xenstore ring transport keeps the ring page mapped while it lives (its `page` is a view): an unmap
/// under it is refused and waits for it; once it is closed and gone, the page is released and fenced.
@Suite struct RingTransportLifetimeTests {
    /// dom0's server end over a guest's granted ring; returns the transport, the mapping and the address.
    static func serverEnd(_ hypervisor: SimulatedHypervisor, guest: SimulatedDomain) throws -> (
        XenStoreRingTransport, GrantMappingHandle
    ) {
        try guest.grantTable.grantAccess(
            .reservedXenstore, to: .dom0, writable: true, page: guest.grantTable.allocatePages(1))
        let mapping = GrantMappingHandle(
            try hypervisor.dom0.grantTable.map(domain: guest.id, ref: .reservedXenstore, writable: true))
        let channel = hypervisor.dom0.eventChannel
        let port = try channel.bindInterdomain(
            remote: guest.id, remotePort: try guest.eventChannel.bindUnboundPort(remote: .dom0))
        let transport = XenStoreRingTransport(
            page: mapping.buffer, role: .server, notify: { try channel.notify(port) },
            waitForEvent: {
                var events = channel.notifications(port).makeAsyncIterator()
                return await events.next() != nil
            })
        return (transport, mapping)
    }

    @Test func theTransportKeepsItsPageUntilItIsGone() async throws {
        let hypervisor = SimulatedHypervisor()
        let guest = try hypervisor.createDomain()
        var (transport, mapping): (XenStoreRingTransport?, GrantMappingHandle) = try Self.serverEnd(
            hypervisor, guest: guest)
        #expect(throws: GrantTableError.stillInUse(refs: [.reservedXenstore])) { try mapping.unmap() }
        #expect(hypervisor.grantMappingCount(granter: guest.id, ref: .reservedXenstore) == 1)
        await transport?.close()
        transport = nil
        #expect(hypervisor.grantMappingCount(granter: guest.id, ref: .reservedXenstore) == 0)
    }

    @Test func aStalePointerIntoAReleasedRingTraps() async {
        await #expect(processExitsWith: .signal(SIGSEGV)) {
            let hypervisor = SimulatedHypervisor()
            let guest = try hypervisor.createDomain()
            var (transport, mapping): (XenStoreRingTransport?, GrantMappingHandle) = try Self.serverEnd(
                hypervisor, guest: guest)
            let stale = transport!.page.pointer
            await transport?.close()
            transport = nil
            try mapping.unmap()
            stale.storeBytes(of: 1, toByteOffset: 1024, as: UInt32.self)
        }
    }

    final class Countdown: Sendable {
        let waits = Mutex(0)
    }

    @Test func pumpEndedReturnsOnceTheEventChannelIsGoneAndTheTransportEnds() async throws {
        let countdown = Countdown()
        let transport = XenStoreRingTransport(
            page: PageBuffer(pages: 1), role: .server, notify: {},
            waitForEvent: {
                try? await Task.sleep(for: .milliseconds(1))
                return countdown.waits.withLock { waits in
                    waits += 1
                    return waits < 3
                }
            })
        await transport.pumpEnded()
        #expect(countdown.waits.withLock { $0 } == 3)
        // The pump's end closes the transport: a read finds the end of the stream.
        #expect(try await transport.read() == nil)
    }
}
