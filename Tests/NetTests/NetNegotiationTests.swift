import NetBack
import NetFront
import NetifProtocol
import NetworkDevice
import SimulatedHypervisor
import Testing
import XenCore

/// Every combination of four backend offers and four frontend requests that shape the data path, end to end:
/// both ends agree on the table, and what each may send is what crosses (a frame as large as allowed, its
/// checksum and GSO metadata). The backend of each offer serves its sixteen frontends one after the other.
@Suite struct NetNegotiationTests {
    @Test(arguments: 0..<16)
    func everyCombinationEndToEnd(backendBits: Int) async throws {
        func on(_ bit: Int) -> Bool { backendBits & (1 << bit) != 0 }
        let harness = try NetHarness()
        let (back, serving) = try await harness.startBackend { options in
            options.features.scatterGather = on(0)
            options.features.gsoTCPv4 = on(1)
            options.features.gsoTCPv6 = on(1)
            options.features.splitEventChannels = on(2)
            options.features.maxQueues = on(3) ? 2 : 1
        }
        for frontBits in 0..<16 {
            func want(_ bit: Int) -> Bool { frontBits & (1 << bit) != 0 }
            let front = try await harness.connectFront { options in
                options.scatterGather = want(0)
                options.gsoTCPv4 = want(1)
                options.gsoTCPv6 = false
                options.queues = want(2) ? 2 : 1
                options.noChecksumOffload = want(3)
            }
            try await waitUntil { back.negotiated != nil }
            let table = front.negotiated
            #expect(back.negotiated == table, "backend \(backendBits) frontend \(frontBits)")
            #expect(table.queues == (on(3) && want(2) ? 2 : 1))
            #expect(table.splitEventChannels == on(2))
            #expect(table.txScatterGather == on(0) && table.rxScatterGather == want(0))
            #expect(table.rxGSO == (want(0) && want(1) ? [.tcpv4] : []))
            #expect(table.rxChecksumOffloadIPv4 == !want(3))
            let txGSO = on(0) && on(1)
            #expect(front.maxFrameSize == (txGSO ? 65535 : 1514))
            #expect(back.maxFrameSize == (want(0) && want(1) ? 65535 : 1514))

            // The largest TCP frame each side may send, with a blank checksum.
            let up = tcpFrame(payload: front.maxFrameSize - 54, seed: 1, from: front.mac, to: back.mac)
            try await front.write(NetworkFrame(data: up, checksum: .blank))
            var received = back.listen().makeAsyncIterator()
            let atBack = try #require(await received.next())
            #expect(atBack.data.count == up.count && (atBack.gso != nil) == txGSO)
            #expect(atBack.checksum == .blank, "backend \(backendBits) frontend \(frontBits)")
            #expect(FrameChecksum.complete(atBack.data) && FrameChecksum.verify(atBack.data) == true)

            let down = tcpFrame(payload: back.maxFrameSize - 54, seed: 2, from: back.mac, to: front.mac)
            try await back.write(NetworkFrame(data: down, checksum: .blank))
            var delivered = front.listen().makeAsyncIterator()
            let atFront = try #require(await delivered.next())
            #expect(atFront.data.count == down.count && (atFront.gso != nil) == (want(0) && want(1)))
            // Blank when offloaded (then completed by the frontend for its reader), filled in by the backend
            // when the frontend refused offload: valid either way.
            #expect(atFront.checksum == .validated && FrameChecksum.verify(atFront.data) == true)
            await front.disconnect()
        }
        #expect(back.connectionCount == 16)
        await back.disconnect()
        try await serving.value
    }
}
