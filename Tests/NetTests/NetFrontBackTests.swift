import NetBack
import NetFront
import NetifProtocol
import NetworkDevice
import SimulatedHypervisor
import Testing
import XenCore

/// NetFront and NetBack on the simulated hypervisor: the handshake, frames of every size both ways,
/// checksum and GSO metadata, queues, back-pressure and statistics.
@Suite struct NetFrontBackTests {
    @Test func handshakeNegotiatesEverythingAndFramesCrossBothWays() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect()
        #expect(front.mac == NetHarness.guestMAC && back.frontendMAC == NetHarness.guestMAC)
        #expect(front.mtu == 1500 && back.mtu == 1500 && back.mac == Netif.defaultBackendMAC)
        let negotiated = try #require(back.negotiated)
        #expect(negotiated == front.negotiated)
        #expect(negotiated.txScatterGather && negotiated.rxScatterGather && negotiated.txGSO == [.tcpv4, .tcpv6])
        #expect(negotiated.splitEventChannels && negotiated.rxNotify && negotiated.queues == 1)
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .connected)
        #expect(try await harness.store.read(harness.nodes.backendPath + "/hotplug-status") == "connected")
        #expect(try await harness.store.read(harness.nodes.frontendPath + "/request-rx-copy") == "1")

        // Frontend → backend, sizes up to the MTU's frame (larger ones: the GSO and jumbo tests).
        let sizes = [60, 64, 1000, 1513, 1514]
        var received = back.listen().makeAsyncIterator()
        for (index, size) in sizes.enumerated() {
            let frame = testFrame(size: size, seed: UInt32(index), from: front.mac, to: back.mac)
            try await front.write(NetworkFrame(data: frame))
        }
        for size in sizes {
            let frame = try #require(await received.next())
            #expect(frame.data.count == size && isTestFrame(frame.data, from: front.mac, to: back.mac))
        }
        // Backend → frontend.
        var delivered = front.listen().makeAsyncIterator()
        for (index, size) in sizes.enumerated() {
            try await back.write(
                NetworkFrame(data: testFrame(size: size, seed: UInt32(100 + index), from: back.mac, to: front.mac)))
        }
        for size in sizes {
            let frame = try #require(await delivered.next())
            #expect(frame.data.count == size && isTestFrame(frame.data, from: back.mac, to: front.mac))
        }
        let frontStats = front.statistics
        #expect(frontStats.txPackets == UInt64(sizes.count) && frontStats.rxPackets == UInt64(sizes.count))
        #expect(frontStats.txBytes == UInt64(sizes.reduce(0, +)) && frontStats.rxErrors == 0)
        #expect(back.statistics.rxPackets == UInt64(sizes.count) && back.statistics.txPackets == UInt64(sizes.count))
        try await harness.tearDown(front, back, serving)
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .closed)
        #expect(try await harness.store.state(of: harness.nodes.frontendPath) == .closed)
    }

    @Test func sixtyFourKiBGSOFramesBothWaysWithBlankChecksums() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect()
        #expect(front.maxFrameSize == 65535 && back.maxFrameSize == 65535)
        let payload = 65535 - 54
        let outgoing = tcpFrame(payload: payload, seed: 3, from: front.mac, to: back.mac)
        try await front.write(NetworkFrame(data: outgoing, checksum: .blank))
        var received = back.listen().makeAsyncIterator()
        let frame = try #require(await received.next())
        #expect(frame.data.count == 65535 && frame.gso == NetworkGSO(type: .tcpv4, segmentSize: 1460))
        #expect(frame.checksum == .blank, "the backend delivers blank checksums as they came (a TAP finishes them)")
        #expect(frame.data.contentsEqual(outgoing))
        #expect(FrameChecksum.complete(frame.data) && FrameChecksum.verify(frame.data) == true)

        // Backend → frontend: the frontend completes blank checksums for its reader by default.
        let incoming = tcpFrame(payload: payload, seed: 9, from: back.mac, to: front.mac)
        let expected = PageBuffer(copying: incoming.bytes)
        FrameChecksum.complete(expected)
        try await back.write(NetworkFrame(data: incoming, checksum: .blank))
        var delivered = front.listen().makeAsyncIterator()
        let gso = try #require(await delivered.next())
        #expect(gso.gso == NetworkGSO(type: .tcpv4, segmentSize: 1460) && gso.checksum == .validated)
        #expect(gso.data.contentsEqual(expected) && FrameChecksum.verify(gso.data) == true)
        try await harness.tearDown(front, back, serving)
    }

    @Test func checksumOffloadRefusedIsDoneInSoftware() async throws {
        let harness = try NetHarness()
        // The frontend takes no blank checksums; the backend offers none either.
        let (front, back, serving) = try await harness.connect(
            back: { $0.features.noChecksumOffload = true },
            front: {
                $0.noChecksumOffload = true
                $0.completeBlankChecksums = false
            })
        #expect(front.negotiated.txChecksumOffloadIPv4 == false && front.negotiated.rxChecksumOffloadIPv4 == false)
        let toBack = tcpFrame(payload: 1000, seed: 1, from: front.mac, to: back.mac)
        try await front.write(NetworkFrame(data: toBack, checksum: .blank))
        var received = back.listen().makeAsyncIterator()
        let atBack = try #require(await received.next())
        #expect(atBack.checksum == .validated && FrameChecksum.verify(atBack.data) == true)

        try await back.write(
            NetworkFrame(data: tcpFrame(payload: 1000, seed: 2, from: back.mac, to: front.mac), checksum: .blank))
        var delivered = front.listen().makeAsyncIterator()
        let atFront = try #require(await delivered.next())
        #expect(atFront.checksum == .validated && FrameChecksum.verify(atFront.data) == true)

        // `.validated` and `.unverified` travel as they are.
        try await front.write(
            NetworkFrame(data: testFrame(size: 100, seed: 7, from: front.mac, to: back.mac), checksum: .validated))
        #expect(try #require(await received.next()).checksum == .validated)
        try await front.write(NetworkFrame(data: testFrame(size: 100, seed: 8, from: front.mac, to: back.mac)))
        #expect(try #require(await received.next()).checksum == .unverified)
        try await harness.tearDown(front, back, serving)
    }

    @Test func withoutGSOLargeFramesAreRefusedAndJumboMTUUsesScatterGather() async throws {
        let harness = try NetHarness(mtu: 9000)
        let (front, back, serving) = try await harness.connect(
            back: {
                $0.features.gsoTCPv4 = false
                $0.features.gsoTCPv6 = false
            },
            front: {
                $0.gsoTCPv4 = false
                $0.gsoTCPv6 = false
            })
        #expect(front.mtu == 9000 && front.maxFrameSize == 9014 && back.maxFrameSize == 9014)
        try await front.write(NetworkFrame(data: testFrame(size: 9014, seed: 1, from: front.mac, to: back.mac)))
        var received = back.listen().makeAsyncIterator()
        #expect(try #require(await received.next()).data.count == 9014)
        await #expect(throws: NetworkError.frameTooLarge(size: 9015, limit: 9014)) {
            try await front.write(NetworkFrame(data: testFrame(size: 9015, seed: 2, from: front.mac, to: back.mac)))
        }
        await #expect(throws: NetworkError.frameTooLarge(size: 20000, limit: 9014)) {
            try await back.write(NetworkFrame(data: testFrame(size: 20000, seed: 3, from: back.mac, to: front.mac)))
        }
        try await back.write(NetworkFrame(data: testFrame(size: 9014, seed: 4, from: back.mac, to: front.mac)))
        var delivered = front.listen().makeAsyncIterator()
        #expect(try #require(await delivered.next()).data.count == 9014)
        try await harness.tearDown(front, back, serving)
    }

    @Test func withoutScatterGatherEveryFrameIsOneSlot() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect(
            back: { $0.features.scatterGather = false }, front: { $0.scatterGather = false })
        #expect(front.maxFrameSize == 1514 && back.maxFrameSize == 1514)
        try await front.write(NetworkFrame(data: testFrame(size: 1514, seed: 1, from: front.mac, to: back.mac)))
        try await back.write(NetworkFrame(data: testFrame(size: 1514, seed: 2, from: back.mac, to: front.mac)))
        var received = back.listen().makeAsyncIterator()
        var delivered = front.listen().makeAsyncIterator()
        #expect(try #require(await received.next()).data.count == 1514)
        #expect(try #require(await delivered.next()).data.count == 1514)
        try await harness.tearDown(front, back, serving)
    }

    @Test(arguments: [(1, false), (2, false), (4, true)])
    func multipleQueuesKeepEachFlowInOrder(queues: Int, split: Bool) async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect(
            back: { $0.features.splitEventChannels = split },
            front: {
                $0.queues = queues
                $0.splitEventChannels = split
            })
        #expect(front.negotiated.queues == queues && front.negotiated.splitEventChannels == split)
        // Eight flows (different destination MACs), 50 frames each, both ways.
        let flows = (0..<8).map { MACAddress.local(seed: UInt64($0) + 100) }
        let writer = Task {
            for index in 0..<400 {
                let flow = flows[index % flows.count]
                try await front.write(
                    NetworkFrame(data: testFrame(size: 200 + index, seed: UInt32(index), from: front.mac, to: flow)))
            }
        }
        var next: [MACAddress: UInt32] = [:]
        var received = back.listen().makeAsyncIterator()
        for _ in 0..<400 {
            let frame = try #require(await received.next())
            let flow = MACAddress(from: frame.data, at: 0)
            let seed = try #require(testSeed(frame.data))
            #expect(isTestFrame(frame.data, from: front.mac, to: flow))
            // Within a flow, seeds grow: no reordering.
            #expect(seed >= next[flow, default: 0])
            next[flow] = seed + 1
        }
        try await writer.value
        try await harness.tearDown(front, back, serving)
    }

    @Test func pingLikeExchange() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect()
        // The backend answers each request frame with the same bytes, addresses swapped.
        let echo = Task {
            for await frame in back.listen() {
                let reply = PageBuffer(copying: frame.data.bytes)
                MACAddress(from: frame.data, at: 6).write(to: reply, at: 0)
                back.mac.write(to: reply, at: 6)
                try await back.write(NetworkFrame(data: reply))
            }
        }
        var replies = front.listen().makeAsyncIterator()
        for sequence in 0..<100 {
            try await front.write(
                NetworkFrame(data: testFrame(size: 98, seed: UInt32(sequence), from: front.mac, to: back.mac)))
            let reply = try #require(await replies.next())
            #expect(testSeed(reply.data) == UInt32(sequence))
            #expect(MACAddress(from: reply.data, at: 0) == front.mac)
        }
        try await harness.tearDown(front, back, serving)
        try await echo.value
    }
}
