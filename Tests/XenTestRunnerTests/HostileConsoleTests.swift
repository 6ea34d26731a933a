import BlockFront
import ConsoleBackend
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport

@testable import xen_test_runner

/// The hostile guest's console attacks (`con MODE FRONT`) against our ConsoleDaemon on the simulated
/// hypervisor: the daemon drops the broken extra console with a typed error, as the real-Xen check expects.
@Suite struct HostileConsoleTests {
    /// Reads the console until it ends; its protocol violation is the serve's error.
    struct DrainSink: ConsoleSink {
        func serve(_ console: ConsoleConnection) async throws(ConsoleError) {
            for try await _ in console.bytes {}
        }
    }

    @Test(arguments: [("overflow", "protocol violation"), ("never-granted", "grant map")])
    func aBrokenExtraConsoleIsDropped(_ mode: String, _ expected: String) async throws {
        try await within(120, "con \(mode)") { try await Self.attack(mode, expected) }
    }

    static func attack(_ mode: String, _ expected: String) async throws {
        let host = SimulatedHost(hypervisor: SimulatedHypervisor(grantTableSize: 256))
        let guest = try await host.makeGuest(name: "hostile", introduce: true)
        let guestID = guest.id
        let dom0 = host.dom0
        let daemon = ConsoleDaemon(
            xenstore: dom0, grantTable: host.dom0Domain.grantTable, eventChannel: host.dom0Domain.eventChannel
        ) { _ throws(ConsoleError) in DrainSink() }
        let running = Task { try await daemon.run() }
        var events = daemon.events.makeAsyncIterator()
        let id = ConsoleID(domain: guestID, device: .extra(1))
        try await ConsoleToolstack.createDevice(id, name: "hostile-1", xenstore: dom0)
        let devices = GuestDevices(
            client: guest.xenstore, bus: guest.bus, gntshr: guest.domain.openGntshr(),
            events: guest.domain.eventChannel)
        let text = try await HostileConsole.run(mode, front: id.frontendPath, devices: devices)
        var reason: String?
        while reason == nil, let event = await events.next() {
            if case .detached(let gone, let why) = event, gone == id { reason = why.map { "\($0)" } ?? "no error" }
        }
        #expect(reason?.contains(expected) == true, "\(String(describing: reason)); guest: \(text)")
        #expect(await daemon.failedConsoles.contains(id))
        if mode == "overflow" { #expect(text.hasSuffix("after=Closed"), "\(text)") }
        running.cancel()
        _ = await running.result
    }
}
