import BlockDevice
import ConsoleBackend
import NetifProtocol
import NetworkDevice
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient
import XenTestSupport

/// The fixtures themselves: what a toolstack writes for a guest, and each device fixture carrying bytes.
@Suite struct SimulatedHostTests {
    @Test func makeGuestWritesTheToolstacksNodes() async throws {
        let host = SimulatedHost()
        let guest = try await host.makeGuest(name: "web")
        let home = "/local/domain/\(guest.id)"
        #expect(host.read(home + "/name") == "web")
        // The guest may read its home and write under device/, but not write its home.
        #expect(try await guest.xenstore.immediate { try await $0.read(home + "/name") } == "web")
        try await guest.xenstore.immediate { try await $0.write(home + "/device/x", "1") }
        await #expect(throws: (any Error).self) {
            try await guest.xenstore.immediate { try await $0.write(home + "/name", "evil") }
        }
        let bare = try host.createGuest()
        #expect(host.read("/local/domain/\(bare.id)") == nil)
        #expect(bare.id != guest.id)
    }

    @Test func aVbdCarriesBytesBothWays() async throws {
        let host = SimulatedHost()
        let vbd = try SimulatedVbd(host: host)
        let serving = try await vbd.serve(MemoryBlockDevice(sizeSectors: 2048))
        let front = try await vbd.connectFront()
        let page = PageBuffer(copying: (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 7) })
        try await front.write(at: 8, from: [page])
        let back = PageBuffer(pages: 1)
        try await front.read(at: 8, into: [back])
        #expect(back.contentsEqual(page))
        await front.disconnect()
        try await serving.value
    }

    @Test func aPrimaryAndAnExtraConsoleCarryBytes() async throws {
        let host = SimulatedHost()
        let guest = try await host.makeGuest()
        let (front, session) = try await host.connectExtraConsole(guest, devid: 2)
        try await front.write(Array("hello\n".utf8))
        #expect(try await session.connection.read() == Array("hello\n".utf8))
        await front.close()
        await session.close()

        let primary = try await host.bootPrimaryConsole(guest)
        #expect(host.read("/local/domain/\(guest.id)/console/ring-ref") != nil)
        let attached = try await host.consoleBackend(for: ConsoleID(domain: guest.id, device: .primary)).connect()
        try await primary.write(Array("boot\n".utf8))
        #expect(try await attached.connection.read() == Array("boot\n".utf8))
        await primary.close()
        await attached.close()
    }

    @Test func aVifCarriesAFrame() async throws {
        let host = SimulatedHost(hypervisor: SimulatedHypervisor(grantTableSize: 8192))
        let vif = SimulatedVif(host: host, guest: try host.createGuest(), mac: MACAddress("00:16:3e:00:00:07")!)
        let (back, serving) = try await vif.startBackend()
        let front = try await vif.connectFront()
        #expect(front.mac == MACAddress("00:16:3e:00:00:07")!)
        var frames = back.listen().makeAsyncIterator()
        let payload = (0..<100).map { UInt8($0) }
        try await front.write(size: payload.count) { buffer in
            for (index, byte) in payload.enumerated() { buffer.setUInt8(byte, at: index) }
            return payload.count
        }
        let frame = try #require(await frames.next())
        #expect((0..<frame.data.count).map { frame.data.uint8(at: $0) } == payload)
        await front.disconnect()
        await back.disconnect()
        try await serving.value
    }
}
