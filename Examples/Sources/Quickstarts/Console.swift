import ConsoleBackend
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer

/// A xenconsoled-style daemon gives the guest's console a pty; the guest writes a line to it. Cancel
/// `running` to stop the daemon.
public func consoleQuickstart(
    server: XenStoreServer, client: XenStoreClient, hypervisor: SimulatedHypervisor, guest: SimulatedDomain
) async throws -> (daemon: ConsoleDaemon, running: Task<Void, any Error>, console: ConsoleFrontend) {
    let dom0 = hypervisor.dom0
    let daemon = ConsoleDaemon(
        xenstore: client, grantTable: dom0.grantTable, eventChannel: dom0.eventChannel
    ) { _ throws(ConsoleError) -> (any ConsoleSink)? in try PtyConsoleSink() }
    let running = Task { try await daemon.run() }
    let (page, info) = try ConsoleFrontend.buildPrimaryRing(
        grantTable: guest.grantTable, eventChannel: guest.eventChannel)
    try await ConsoleToolstack.createPrimary(domain: guest.id, ring: info, xenstore: client)
    let console = try ConsoleFrontend(
        primaryPage: page, port: info.port, domain: guest.id, eventChannel: guest.eventChannel)
    try await console.write(Array("hello from the guest\r\n".utf8))
    server.introduceDomain(guest.id)  // the daemon attaches; the text arrives on the pty
    return (daemon, running, console)
}
