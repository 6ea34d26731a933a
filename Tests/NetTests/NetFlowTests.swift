import NetBack
import NetFront
import NetifProtocol
import NetworkDevice
import SimulatedHypervisor
import Testing
import XenCore

/// Back-pressure (no frame lost when a reader is slow or the peer posts no buffers), a checksummed 16 MiB
/// stream each way, and multicast control.
@Suite struct NetFlowTests {
    @Test func aSlowFrontendReaderHoldsTheBackendBackWithoutLoss() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect(front: {
            $0.frameQueueCapacity = 8
            $0.rxBuffers = 32
        })
        let count = 2000
        let writer = Task {
            for index in 0..<count {
                try await back.write(
                    NetworkFrame(
                        data: testFrame(size: 100 + index % 1400, seed: UInt32(index), from: back.mac, to: front.mac)))
            }
        }
        // Nobody reads for a while: the ring fills, the backend waits.
        try await waitUntil { back.statistics.txWaits > 0 && front.statistics.rxHeldBack > 0 }
        var delivered = front.listen().makeAsyncIterator()
        for index in 0..<count {
            let frame = try #require(await delivered.next())
            #expect(testSeed(frame.data) == UInt32(index) && frame.data.count == 100 + index % 1400)
        }
        try await writer.value
        let stats = front.statistics
        #expect(stats.rxPackets == UInt64(count) && stats.rxDropped == 0 && stats.rxErrors == 0)
        #expect(back.statistics.txPackets == UInt64(count) && back.statistics.txDropped == 0)
        try await harness.tearDown(front, back, serving)
    }

    @Test func aSlowBackendReaderHoldsTheFrontendBackWithoutLoss() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect(
            back: { $0.frameQueueCapacity = 8 }, front: { $0.txBuffers = 32 })
        let count = 2000
        let writer = Task {
            for index in 0..<count {
                try await front.write(
                    NetworkFrame(
                        data: testFrame(size: 60 + index % 1400, seed: UInt32(index), from: front.mac, to: back.mac)))
            }
        }
        try await waitUntil { front.statistics.txWaits > 0 && back.statistics.rxHeldBack > 0 }
        var received = back.listen().makeAsyncIterator()
        for index in 0..<count {
            let frame = try #require(await received.next())
            #expect(testSeed(frame.data) == UInt32(index))
        }
        try await writer.value
        #expect(back.statistics.rxPackets == UInt64(count) && back.statistics.rxErrors == 0)
        #expect(front.statistics.txPackets == UInt64(count) && front.statistics.txErrors == 0)
        try await harness.tearDown(front, back, serving)
    }

    /// 16 MiB each way at once, in frames of every size up to 64 KiB (GSO above the MTU), with an FNV-1a
    /// checksum of the whole stream on both sides.
    @Test(arguments: [1, 2])
    func sixteenMiBStreamEachWayChecksummed(queues: Int) async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect(front: { $0.queues = queues })
        let total = 16 << 20
        @Sendable func send(_ device: any NetworkDevice, to destination: MACAddress) async throws -> UInt64 {
            var hash: UInt64 = 0xCBF2_9CE4_8422_2325
            var sent = 0
            var index = 0
            while sent < total {
                let payload = min(total - sent, [1, 100, 1446, 8000, 65481][index % 5])
                let frame = tcpFrame(
                    payload: payload, seed: UInt8(truncatingIfNeeded: index), from: device.mac, to: destination)
                for offset in 54..<(54 + payload) { hash = (hash ^ UInt64(frame.uint8(at: offset))) &* 0x100_0000_01B3 }
                try await device.write(NetworkFrame(data: frame, checksum: .blank))
                sent += payload
                index += 1
            }
            return hash
        }
        @Sendable func receive(_ device: any NetworkDevice) async -> (UInt64, Int, Bool) {
            var hash: UInt64 = 0xCBF2_9CE4_8422_2325
            var received = 0
            var checksumsGood = true
            for await frame in device.listen() {
                if frame.checksum == .blank { FrameChecksum.complete(frame.data) }
                checksumsGood = checksumsGood && FrameChecksum.verify(frame.data) == true
                for offset in 54..<frame.data.count {
                    hash = (hash ^ UInt64(frame.data.uint8(at: offset))) &* 0x100_0000_01B3
                }
                received += frame.data.count - 54
                if received >= total { break }
            }
            return (hash, received, checksumsGood)
        }
        // One flow each way (one TCP connection's worth), so order is kept even over two queues.
        async let atBack = receive(back)
        async let atFront = receive(front)
        async let fromFront = send(front, to: back.mac)
        async let fromBack = send(back, to: front.mac)
        let (sentUp, sentDown) = try await (fromFront, fromBack)
        let (up, down) = await (atBack, atFront)
        #expect(up.1 == total && up.0 == sentUp && up.2)
        #expect(down.1 == total && down.0 == sentDown && down.2)
        try await harness.tearDown(front, back, serving)
    }

    @Test func multicastControlFiltersWhatTheFrontendDidNotAskFor() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect(front: { $0.multicastControl = true })
        #expect(back.negotiated?.multicastControl == true)
        let wanted = try #require(MACAddress("01:00:5e:00:00:fb"))
        let unwanted = try #require(MACAddress("01:00:5e:00:00:fc"))
        try await front.addMulticast(wanted)
        try await front.addMulticast(unwanted)
        try await front.removeMulticast(unwanted)
        // The control requests are answered in order with the frames that follow; a frame to the backend
        // after them proves they were processed.
        try await front.write(NetworkFrame(data: testFrame(size: 80, seed: 1, from: front.mac, to: back.mac)))
        var received = back.listen().makeAsyncIterator()
        #expect(testSeed(try #require(await received.next()).data) == 1)
        for (seed, destination) in [(2, unwanted), (3, wanted), (4, MACAddress.broadcast), (5, front.mac)] {
            try await back.write(
                NetworkFrame(data: testFrame(size: 90, seed: UInt32(seed), from: back.mac, to: destination)))
        }
        var delivered = front.listen().makeAsyncIterator()
        for seed: UInt32 in [3, 4, 5] { #expect(testSeed(try #require(await delivered.next()).data) == seed) }
        #expect(back.statistics.txDropped == 1, "the unsubscribed multicast frame, counted")
        try await harness.tearDown(front, back, serving)
    }

    @Test func writesWithoutAConnectionFailAndAreCounted() async throws {
        let harness = try NetHarness()
        let (back, serving) = try await harness.startBackend()
        await #expect(throws: NetworkError.disconnected) {
            try await back.write(NetworkFrame(data: testFrame(size: 100, seed: 0, from: back.mac, to: .broadcast)))
        }
        #expect(back.statistics.txDropped == 1)
        await back.disconnect()
        try await serving.value
    }
}
