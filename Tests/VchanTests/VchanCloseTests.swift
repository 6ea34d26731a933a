import SimulatedHypervisor
import Testing
import Vchan
import XenCore

/// Closing while the other side, or this side's own tasks, are busy: every operation ends with a typed
/// error, nothing traps or hangs, and everything shared, mapped or bound is given back.
@Suite struct VchanCloseTests {
    struct Pair {
        let rig = VchanRig()
        let server: SimulatedDomain
        let client: SimulatedDomain
        let serverEnd: VchanConnection
        let clientEnd: VchanConnection

        init(readSize: Int = 1024, writeSize: Int = 2048) async throws {
            server = try await rig.makeDomain()
            client = try await rig.makeDomain()
            (serverEnd, clientEnd) = try await rig.connect(
                server: server, client: client, readSize: readSize, writeSize: writeSize,
                options: VchanOptions(recheckInterval: nil))
        }

        /// Both closed: no grant of the server's left (share or mapping), no memory of either domain still mapped
        /// or shared, both ports unbound, no xenstore entry.
        func expectAllReleased() {
            #expect(rig.hypervisor.grantMappingCount(granter: server.id, ref: serverEnd.ringRef) == nil)
            #expect(server.eventChannel.status(serverEnd.localPort) == nil)
            #expect(client.eventChannel.status(clientEnd.localPort) == nil)
            #expect(rig.read(serverEnd.xenstorePath) == nil)
            #expect(rig.hypervisor.grants(of: server.id).isEmpty, "every grant revoked")
            for domain in [server.id, client.id] {
                let live = rig.hypervisor.memoryRecords(of: domain).filter { !$0.released }
                #expect(live.isEmpty, "dom\(domain.rawValue) still maps or shares \(live)")
            }
        }
    }

    @Test func closeWhileThisSideReadsAndWrites() async throws {
        let pair = try await Pair()
        let reader = Task { try await pair.serverEnd.read() }
        let writer = Task { try await pair.serverEnd.write(patternBytes(count: 100_000, seed: 1)) }
        try await Task.sleep(for: .milliseconds(50))
        await pair.serverEnd.close()
        await #expect(throws: VchanError.closed) { try await within(60, "reader") { try await reader.value } }
        await #expect(throws: VchanError.closed) { try await within(60, "writer") { try await writer.value } }
        await #expect(throws: VchanError.closed) { try await pair.serverEnd.read() }
        // The client still gets what was written before the close, then the end of the stream.
        let got = try await within(60, "the client draining") { try await drain(pair.clientEnd) }
        #expect(got == Array(patternBytes(count: 100_000, seed: 1).prefix(got.count)))
        #expect(got.count == 2048, "exactly one ring-full made it")
        await pair.clientEnd.close()
        pair.expectAllReleased()
    }

    @Test func bothEndsCloseAtOnceTwice() async throws {
        let pair = try await Pair(readSize: 65536, writeSize: 1 << 20)
        async let a: Void = pair.serverEnd.close()
        async let b: Void = pair.clientEnd.close()
        async let c: Void = pair.serverEnd.close()
        async let d: Void = pair.clientEnd.close()
        _ = await (a, b, c, d)
        await pair.serverEnd.close()
        pair.expectAllReleased()
        #expect(pair.serverEnd.failure == .closed && pair.clientEnd.failure == .closed)
    }

    /// The peer closes in the middle of our large write: the write fails with `.peerClosed`, not a hang.
    @Test func peerClosesDuringALargeWrite() async throws {
        let pair = try await Pair()
        let writer = Task { try await pair.serverEnd.write(patternBytes(count: 1_000_000, seed: 2)) }
        _ = try await pair.clientEnd.read(exactly: 10_000)
        await pair.clientEnd.close()
        await #expect(throws: VchanError.peerClosed) { try await within(60, "writer") { try await writer.value } }
        await pair.serverEnd.close()
        pair.expectAllReleased()
    }

    /// A reader cancelled while it waits: `.cancelled`, and the connection stays usable.
    @Test func cancelledReaderLeavesTheConnectionUsable() async throws {
        let pair = try await Pair()
        let reader = Task { try await pair.serverEnd.read() }
        try await Task.sleep(for: .milliseconds(30))
        reader.cancel()
        await #expect(throws: VchanError.cancelled) { try await within(60, "reader") { try await reader.value } }
        try await pair.clientEnd.write([5])
        #expect(try await pair.serverEnd.read() == [5])
        await pair.clientEnd.close()
        await pair.serverEnd.close()
        pair.expectAllReleased()
    }

    /// Many rounds of transfers both ways, cut by a close from a random side at a random moment: whatever
    /// each operation throws is a `VchanError` and everything is released each time.
    @Test func randomCloses() async throws {
        var generator = SplitMix64(seed: 42)
        for round in 0..<20 {
            let pair = try await Pair()
            let delay = Int(generator.next() % 20)
            let serverCloses = generator.next() % 2 == 0
            try await within(60, "round \(round)") {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for (writer, reader) in [(pair.serverEnd, pair.clientEnd), (pair.clientEnd, pair.serverEnd)] {
                        group.addTask {
                            do throws(VchanError) {
                                try await writer.write(patternBytes(count: 200_000, seed: UInt64(round)))
                            } catch {
                                #expect([.closed, .peerClosed].contains(error))
                            }
                        }
                        group.addTask {
                            do throws(VchanError) {
                                while true { _ = try await reader.read() }
                            } catch {
                                #expect([.closed, .peerClosed].contains(error))
                            }
                        }
                    }
                    group.addTask {
                        try await Task.sleep(for: .milliseconds(delay))
                        await (serverCloses ? pair.serverEnd : pair.clientEnd).close()
                        await (serverCloses ? pair.clientEnd : pair.serverEnd).close()
                    }
                    try await group.waitForAll()
                }
            }
            pair.expectAllReleased()
        }
    }

    /// A server closed before any client came: its entries are gone, and a late client times out.
    @Test func serverClosedBeforeTheClientCame() async throws {
        let rig = VchanRig()
        let server = try await rig.makeDomain()
        let client = try await rig.makeDomain()
        let port = try VchanPort("gone")
        let published = try await VchanServer.publish(
            domain: client.id, port: port, environment: rig.environment(server))
        await published.close()
        #expect(rig.read(published.xenstorePath) == nil)
        await #expect(throws: VchanError.self) {
            _ = try await VchanClient.connect(
                domain: server.id, port: port, environment: rig.environment(client),
                options: VchanOptions(connectTimeout: .milliseconds(200)))
        }
        #expect(rig.hypervisor.grantMappingCount(granter: server.id, ref: published.ringRef) == nil)
    }

    /// A connection dropped without close(): its deinit stops its tasks and gives everything back; the
    /// peer learns it from the unmap notification.
    @Test func droppedWithoutClose() async throws {
        let rig = VchanRig()
        let server = try await rig.makeDomain()
        let client = try await rig.makeDomain()
        var pair: (server: VchanConnection, client: VchanConnection)? = try await rig.connect(
            server: server, client: client, options: VchanOptions(recheckInterval: nil))
        let serverEnd = pair!.server
        let (clientPort, ref) = (pair!.client.localPort, serverEnd.ringRef)
        let reader = Task { try await serverEnd.read() }
        try await Task.sleep(for: .milliseconds(30))
        pair = nil
        await #expect(throws: VchanError.peerClosed) { try await within(60, "reader") { try await reader.value } }
        #expect(client.eventChannel.status(clientPort) == nil)
        #expect(rig.hypervisor.grantMappingCount(granter: server.id, ref: ref) == 0)
        await serverEnd.close()
    }
}
