import SimulatedHypervisor
import Vchan
import XenCore
import XenStoreClient
import XenStoreServer

/// A byte stream from the guest to dom0: dom0 listens, the guest connects and writes "hello".
public func vchanQuickstart(
    server: XenStoreServer, hypervisor: SimulatedHypervisor, guest: SimulatedDomain
) async throws -> [UInt8] {
    let dom0Side = VchanEnvironment(  // on Xen: try VchanEnvironment.xen(xenstore:)
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
    return hello
}
