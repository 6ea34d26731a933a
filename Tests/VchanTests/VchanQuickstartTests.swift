import SimulatedHypervisor
import Testing
import Vchan
import XenCore
import XenStoreClient
import XenStoreServer

/// The README's Vchan quickstart, compiled and run as written (so the front page cannot rot).
@Suite struct VchanQuickstartTests {
    @Test func readmeSnippet() async throws {
        let server = XenStoreServer()
        let hypervisor = SimulatedHypervisor()
        let guest = try hypervisor.createDomain(name: "guest")
        // README snippet begins
        let dom0Side = VchanEnvironment(
            xenstore: XenStoreClient(transport: server.connect(domain: .dom0)),
            eventChannel: hypervisor.dom0.eventChannel, gntshr: hypervisor.dom0.openGntshr(),
            grantTable: hypervisor.dom0.grantTable, localDomain: .dom0)
        let guestSide = VchanEnvironment(
            xenstore: XenStoreClient(transport: server.connect(domain: guest.id)), eventChannel: guest.eventChannel,
            gntshr: guest.openGntshr(), grantTable: guest.grantTable, localDomain: guest.id)
        let name = try VchanPort("qrexec")
        async let listening = VchanServer.listen(domain: guest.id, port: name, environment: dom0Side)
        let guestEnd = try await VchanClient.connect(domain: .dom0, port: name, environment: guestSide)
        let dom0End = try await listening
        try await guestEnd.write(Array("hello".utf8))
        let hello = try await dom0End.read(exactly: 5)  // whole reads, partial reads, chunks(), writeSome
        await guestEnd.close()
        await dom0End.close()
        // README snippet ends
        #expect(hello == Array("hello".utf8))
    }
}
