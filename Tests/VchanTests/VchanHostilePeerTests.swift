import EventChannel
import GrantTable
import SimulatedHypervisor
import Testing
import Vchan
import XenCore

/// Peers that break the protocol, never signal, stop consuming or die: each gives a typed error and a
/// closed vchan within a bound, never a trap or a silent hang.
@Suite struct VchanHostilePeerTests {
    /// A server published for a raw client, which maps the pages and announces itself.
    struct Setup {
        let rig = VchanRig()
        let server: SimulatedDomain
        let client: SimulatedDomain
        let serverEnd: VchanConnection
        let raw: RawClient

        init(options: VchanOptions = VchanOptions(), readSize: Int = 1024, writeSize: Int = 2048) async throws {
            server = try await rig.makeDomain()
            client = try await rig.makeDomain()
            serverEnd = try await VchanServer.publish(
                domain: client.id, port: try VchanPort("hostile"), readSize: readSize, writeSize: writeSize,
                environment: rig.environment(server), options: options)
            raw = try RawClient(domain: client, published: serverEnd)
            try raw.announce()
            try await serverEnd.waitForPeer(timeout: .seconds(5))
        }

        /// After the connection failed: it closed itself, told the peer and gave everything back.
        func expectClosedAndReleased(_ reason: VchanError) async throws {
            let ref = serverEnd.ringRef
            let port = serverEnd.localPort
            try await within(60, "the connection closing itself") {
                while rig.hypervisor.grantMappingCount(granter: server.id, ref: ref) == 0
                    || server.eventChannel.status(port) != nil
                {
                    try await Task.sleep(for: .milliseconds(5))
                    if rig.hypervisor.grantMappingCount(granter: server.id, ref: ref) == nil { break }
                }
            }
            #expect(serverEnd.failure == reason)
            await #expect(throws: reason) { try await serverEnd.read() }
            await #expect(throws: reason) { try await serverEnd.write([1]) }
            #expect(raw.page?.uint8(at: VchanLayout.serverLiveOffset) == VchanLiveState.exited.rawValue)
            raw.die()
            await serverEnd.close()
            #expect(rig.hypervisor.grantMappingCount(granter: server.id, ref: ref) == nil, "page released")
            #expect(server.eventChannel.status(port) == nil, "port unbound")
        }
    }

    @Test func producerIndexBeyondTheRing() async throws {
        let setup = try await Setup()
        setup.raw.page?.setUInt32(1025, at: VchanLayout.leftProducerOffset)
        try setup.raw.signal()
        let error = VchanError.producerOutOfRange(producer: 1025, consumer: 0, size: 1024)
        await #expect(throws: error) { try await within(60, "read") { try await setup.serverEnd.read() } }
        try await setup.expectClosedAndReleased(error)
    }

    @Test func producerIndexBehindTheConsumer() async throws {
        let setup = try await Setup()
        _ = try setup.raw.writeSilently([1, 2, 3])
        #expect(try await setup.serverEnd.read() == [1, 2, 3])
        setup.raw.page?.setUInt32(1, at: VchanLayout.leftProducerOffset)
        try setup.raw.signal()
        let error = VchanError.producerOutOfRange(producer: 1, consumer: 3, size: 1024)
        await #expect(throws: error) { try await within(60, "read") { try await setup.serverEnd.read() } }
        try await setup.expectClosedAndReleased(error)
    }

    @Test func consumerIndexAheadOfTheProducer() async throws {
        let setup = try await Setup()
        setup.raw.page?.setUInt32(0x8000_0000, at: VchanLayout.rightConsumerOffset)
        let error = VchanError.consumerOutOfRange(producer: 0, consumer: 0x8000_0000, size: 2048)
        await #expect(throws: error) { try await within(60, "write") { try await setup.serverEnd.write([1]) } }
        try await setup.expectClosedAndReleased(error)
    }

    /// The peer breaks the page while our writer sleeps on a full ring: the writer wakes with the error.
    @Test func violationWhileWaiting() async throws {
        let setup = try await Setup()
        let writer = Task { try await setup.serverEnd.write(patternBytes(count: 10_000, seed: 1)) }
        try await Task.sleep(for: .milliseconds(50))
        setup.raw.page?.setUInt32(0xDEAD_BEEF, at: VchanLayout.rightConsumerOffset)
        try setup.raw.signal()
        let error = VchanError.consumerOutOfRange(producer: 2048, consumer: 0xDEAD_BEEF, size: 2048)
        await #expect(throws: error) { try await within(60, "the waiting writer") { try await writer.value } }
        try await setup.expectClosedAndReleased(error)
    }

    @Test func liveByteWithNoMeaning() async throws {
        let setup = try await Setup()
        setup.raw.page?.setUInt8(0x41, at: VchanLayout.clientLiveOffset)
        try setup.raw.signal()
        let error = VchanError.invalidLiveState(0x41)
        await #expect(throws: error) { try await within(60, "read") { try await setup.serverEnd.read() } }
        try await setup.expectClosedAndReleased(error)
    }

    /// A peer that writes but never signals: the re-check timer moves its bytes anyway.
    @Test func peerThatNeverSignals() async throws {
        let setup = try await Setup(options: VchanOptions(recheckInterval: .milliseconds(20)))
        let data = patternBytes(count: 3000, seed: 2)
        let received = try await within(60, "bytes from a silent peer") {
            var offset = 0
            var received: [UInt8] = []
            while received.count < data.count {
                offset += try setup.raw.writeSilently(Array(data[offset...]))
                received += try await setup.serverEnd.read()
            }
            return received
        }
        #expect(received == data)
        setup.raw.die()
        await setup.serverEnd.close()
    }

    /// A peer that never consumes: with a stall timeout our writer gives up and the vchan closes.
    @Test func peerThatNeverConsumes() async throws {
        let setup = try await Setup(options: VchanOptions(recheckInterval: nil, stallTimeout: .milliseconds(200)))
        let error = VchanError.peerStalled(waited: .milliseconds(200))
        await #expect(throws: error) {
            try await within(60, "stalled write") {
                try await setup.serverEnd.write(patternBytes(count: 5000, seed: 3))
            }
        }
        try await setup.expectClosedAndReleased(error)
    }

    /// The client's process dies: the kernel clears `cli_live` and signals (the unmap notification it
    /// armed), so a reader sleeping on an empty ring learns it at once, events only.
    @Test func clientProcessDies() async throws {
        let setup = try await Setup(options: VchanOptions(recheckInterval: nil))
        _ = try setup.raw.writeSilently([7, 7])
        let reader = Task { () -> [UInt8] in
            var got: [UInt8] = []
            do {
                while true { got += try await setup.serverEnd.read() }
            } catch {
                #expect(error as? VchanError == .peerClosed)
            }
            return got
        }
        try await Task.sleep(for: .milliseconds(50))
        setup.raw.die()
        let got = try await within(60, "the reader after the peer died") { await reader.value }
        #expect(got == [7, 7], "what the peer wrote before dying is delivered")
        await #expect(throws: VchanError.peerClosed) { try await setup.serverEnd.write([1]) }
        await setup.serverEnd.close()
        #expect(setup.rig.hypervisor.grantMappingCount(granter: setup.server.id, ref: setup.serverEnd.ringRef) == nil)
    }

    /// The server's process dies under our client: the share's unmap notification clears `srv_live`.
    @Test func serverProcessDies() async throws {
        let rig = VchanRig()
        let server = try await rig.makeDomain()
        let client = try await rig.makeDomain()
        var raw: RawServer? = try RawServer(domain: server, client: client.id)
        let sizes = try VchanRingSizes.server(readMinimum: 0, writeMinimum: 0)
        VchanControlPage.initialiseServerPage(raw!.page, sizes: sizes, grants: [])
        try await raw!.publish(rig: rig, client: client.id, port: "dies")
        let clientEnd = try await VchanClient.connect(
            domain: server.id, port: try VchanPort("dies"), environment: rig.environment(client),
            options: VchanOptions(recheckInterval: nil))
        let reader = Task { try await clientEnd.read() }
        try await Task.sleep(for: .milliseconds(50))
        try raw!.share.unshare()  // what gntalloc does when the server's process exits
        raw = nil
        await #expect(throws: VchanError.peerClosed) {
            try await within(60, "the reader after the server died") { try await reader.value }
        }
        await clientEnd.close()
    }

    /// The peer's whole domain is destroyed (no kernel left to notify): dom0's `@releaseDomain` watch
    /// notices. (Only a privileged endpoint may watch it; xenstored refuses a guest.)
    @Test func peerDomainDestroyed() async throws {
        let rig = VchanRig()
        let client = try await rig.makeDomain()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: rig.hypervisor.dom0, client: client, options: VchanOptions(recheckInterval: nil))
        let reader = Task { try await serverEnd.read() }
        try await Task.sleep(for: .milliseconds(50))
        rig.hypervisor.destroyDomain(client.id)
        _ = rig.store.releaseDomain(client.id)
        await #expect(throws: VchanError.peerDied(client.id)) {
            try await within(60, "the reader after the domain died") { try await reader.value }
        }
        await serverEnd.close()
        withExtendedLifetime(clientEnd) {}  // a dead domain's endpoint never closes (nor notifies) by itself
    }
}
