import GrantTable
import SimulatedHypervisor
import Testing
import Vchan
import XenCore
import XenStoreClient

/// Server and client over the simulated hypervisor and the in-memory xenstored.
@Suite struct VchanConnectionTests {
    @Test func rendezvousAsLibxenvchanDoesIt() async throws {
        let rig = VchanRig()
        let server = try await rig.makeDomain()
        let client = try await rig.makeDomain()
        let port = try VchanPort("rpc-1")
        let published = try await VchanServer.publish(
            domain: client.id, port: port, environment: rig.environment(server, explicitDomid: false))
        let path = "/local/domain/\(server.id.rawValue)/data/vchan/\(client.id.rawValue)/rpc-1"
        #expect(published.xenstorePath == path)
        #expect(rig.read("\(path)/ring-ref") == "\(published.ringRef.rawValue)")
        #expect(rig.read("\(path)/event-channel") == "\(published.localPort.rawValue)")
        let permissions = try await rig.dom0.immediate { try await $0.permissions(of: "\(path)/ring-ref") }
        #expect(permissions == XenStorePermissions(owner: server.id, others: .none, acl: [.init(.read, client.id)]))
        // A third domain may not read the entries.
        let stranger = try await rig.makeDomain()
        let strangerStore = XenStoreClient(transport: rig.store.connect(domain: stranger.id))
        await #expect(throws: XenStoreError.self) {
            try await strangerStore.immediate { try await $0.read("\(path)/ring-ref") }
        }
        #expect(try published.peerState() == .waitingForConnection)
        let connected = try await VchanClient.connect(
            domain: server.id, port: port, environment: rig.environment(client, explicitDomid: false))
        try await published.waitForPeer(timeout: .seconds(5))
        #expect(try published.peerState() == .connected)
        #expect(try connected.peerState() == .connected)
        #expect(connected.ringSizes == published.ringSizes)
        try await connected.write(Array("hello".utf8))
        #expect(try await published.read(exactly: 5) == Array("hello".utf8))
        await connected.close()
        await published.close()
        #expect(rig.read(path) == nil, "the server withdraws its entries")
        #expect(rig.read("/local/domain/\(server.id.rawValue)/data/vchan/\(client.id.rawValue)") == nil)
    }

    /// Every ring order each way, 10 (1 KiB in the page) to 20 (1 MiB, 256 pages): several ring-fulls of
    /// pattern bytes both ways at once, compared byte for byte.
    @Test(arguments: [1024, 2048, 4096, 8192, 16384, 32768, 65536, 1 << 17, 1 << 18, 1 << 19, 1 << 20])
    func everySize(size: Int) async throws {
        for (readSize, writeSize) in [(size, 2048), (1024, size)] {
            let rig = VchanRig()
            let server = try await rig.makeDomain()
            let client = try await rig.makeDomain()
            let (serverEnd, clientEnd) = try await rig.connect(
                server: server, client: client, readSize: readSize, writeSize: writeSize)
            #expect(serverEnd.ringSizes.leftSize >= readSize && serverEnd.ringSizes.rightSize >= writeSize)
            let up = patternBytes(count: 3 * max(readSize, 4096) + 1234, seed: UInt64(size))
            let down = patternBytes(count: 3 * max(writeSize, 4096) + 777, seed: UInt64(size) + 1)
            try await within(60, "transfer \(readSize)/\(writeSize)") {
                try await exchange(server: serverEnd, client: clientEnd, up: up, down: down)
            }
            #expect(serverEnd.statistics == (UInt64(up.count), UInt64(down.count)))
            await clientEnd.close()
            await serverEnd.close()
        }
    }

    @Test func dom0LoopbackAsTheXenTierRunsIt() async throws {
        let rig = VchanRig()
        let dom0 = rig.hypervisor.dom0
        let (serverEnd, clientEnd) = try await rig.connect(
            server: dom0, client: dom0, readSize: 65536, writeSize: 65536)
        let data = patternBytes(count: 300_000, seed: 3)
        async let sent: Void = serverEnd.write(data)
        #expect(try await clientEnd.read(exactly: data.count) == data)
        try await sent
        await serverEnd.close()
        #expect(try await drain(clientEnd).isEmpty, "the peer's close ends the stream")
        await clientEnd.close()
    }

    @Test func chunksEndWhenThePeerCloses() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain())
        let data = patternBytes(count: 100_000, seed: 4)
        async let received = drain(serverEnd, maximum: 3000)
        try await clientEnd.write(data)
        await clientEnd.close()
        let got = try await received
        #expect(got == data, "what was written before close is still delivered")
        await #expect(throws: VchanError.peerClosed) { try await serverEnd.write([1]) }
        await serverEnd.close()
    }

    @Test func partialReadsAndWrites() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain())
        // The client writes into the 1024-byte left ring: a partial write takes what fits.
        let first = try await clientEnd.writeSome(patternBytes(count: 5000, seed: 5))
        #expect(first == 1024)
        #expect(clientEnd.bufferSpace == 0)
        #expect(serverEnd.dataReady == 1024)
        let some = try await serverEnd.read(maximum: 100)
        #expect(some == Array(patternBytes(count: 5000, seed: 5).prefix(100)))
        let rest = try await serverEnd.read(maximum: 5000)
        #expect(rest.count == 924)
        let buffer = PageBuffer(pages: 1)
        async let into = serverEnd.read(into: buffer)
        try await clientEnd.write([9, 8, 7])
        #expect(try await into == 3)
        #expect(buffer.slice(from: 0, count: 3).bytes == [9, 8, 7])
        await clientEnd.close()
        await serverEnd.close()
    }

    /// Back-pressure: a writer waits while the reader does not read, and goes on as soon as it does.
    @Test func writerWaitsForTheReader() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain(),
            options: VchanOptions(recheckInterval: nil))
        let data = patternBytes(count: 2048 * 3, seed: 6)
        let writer = Task { try await serverEnd.write(data) }
        try await Task.sleep(for: .milliseconds(100))
        #expect(serverEnd.statistics.sent == 2048, "the ring is full and nobody reads")
        #expect(try await clientEnd.read(exactly: data.count) == data)
        try await writer.value
        await clientEnd.close()
        await serverEnd.close()
    }

    /// Concurrent whole writes are served one at a time: no interleaving inside a write.
    @Test func concurrentWritersDoNotInterleave() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain())
        let blocks = (0..<8).map { [UInt8](repeating: UInt8($0), count: 5000) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for block in blocks { group.addTask { try await clientEnd.write(block) } }
            group.addTask {
                let got = try await serverEnd.read(exactly: 8 * 5000)
                var seen = Set<UInt8>()
                for start in stride(from: 0, to: got.count, by: 5000) {
                    let run = got[start..<start + 5000]
                    #expect(Set(run).count == 1, "a block arrived whole")
                    seen.insert(run.first!)
                }
                #expect(seen.count == 8)
            }
            try await group.waitForAll()
        }
        await clientEnd.close()
        await serverEnd.close()
    }

    @Test func clientWaitsForTheServerEntries() async throws {
        let rig = VchanRig()
        let server = try await rig.makeDomain()
        let client = try await rig.makeDomain()
        let port = try VchanPort("late")
        async let connecting = VchanClient.connect(domain: server.id, port: port, environment: rig.environment(client))
        try await Task.sleep(for: .milliseconds(50))
        let serverEnd = try await VchanServer.listen(
            domain: client.id, port: port, environment: rig.environment(server))
        let clientEnd = try await connecting
        try await clientEnd.write([42])
        #expect(try await serverEnd.read() == [42])
        await clientEnd.close()
        await serverEnd.close()
    }

    @Test func timeouts() async throws {
        let rig = VchanRig()
        let server = try await rig.makeDomain()
        let client = try await rig.makeDomain()
        let port = try VchanPort("nobody")
        await #expect(
            throws: VchanError.timedOut(
                operation:
                    "xenstore entries under /local/domain/\(server.id.rawValue)/data/vchan/\(client.id.rawValue)/nobody"
            )
        ) {
            _ = try await VchanClient.connect(
                domain: server.id, port: port, environment: rig.environment(client),
                options: VchanOptions(connectTimeout: .milliseconds(100)))
        }
        let path = "/local/domain/\(server.id.rawValue)/data/vchan/\(client.id.rawValue)/nobody"
        await #expect(throws: VchanError.timedOut(operation: "vchan client on \(path)")) {
            try await within(60, "listen with a connect timeout") {
                _ = try await VchanServer.listen(
                    domain: client.id, port: port, environment: rig.environment(server),
                    options: VchanOptions(connectTimeout: .milliseconds(100)))
            }
        }
        #expect(rig.read("/local/domain/\(server.id.rawValue)/data/vchan/\(client.id.rawValue)/nobody") == nil)
    }
}
