import BlkifProtocol
import BlockBack
import BlockDevice
import BlockFront
import Testing
import XenCore

/// Each backend feature switched off in turn: the frontend adapts and the data path still works.
@Suite struct FeatureNegotiationTests {
    enum Off: String, CaseIterable, Sendable {
        case indirect, multiPageRing, flush, barrier, flushAndBarrier, persistentGrants, discard, multiQueue, none
    }

    @Test(arguments: Off.allCases)
    func backendFeatureOff(_ off: Off) async throws {
        let harness = try BlockHarness()
        var options = BlockBackOptions(domain: harness.backDomain.id)
        switch off {
        case .indirect: options.maxIndirectSegments = 0
        case .multiPageRing: options.maxRingPageOrder = 0
        case .flush: options.flush = false
        case .barrier: options.barrier = false
        case .flushAndBarrier:
            options.flush = false
            options.barrier = false
        case .persistentGrants: options.persistentGrants = false
        case .discard: options.discard = false
        case .multiQueue: options.maxQueues = 1
        case .none: break
        }
        let device = MemoryBlockDevice(sizeSectors: 4096)
        let back = try await harness.startBackend(device, options: options)
        let front = try await harness.connectFront(
            options: BlockFrontOptions(domain: harness.frontDomain.id, queues: 4, maxIndirectSegments: 1024))
        let negotiated = front.negotiated
        #expect(negotiated.segmentsPerRequest == (off == .indirect ? 11 : 256))
        #expect(negotiated.ringPages == (off == .multiPageRing ? 1 : 16))
        #expect(negotiated.persistentGrants == (off != .persistentGrants))
        #expect(negotiated.queues == (off == .multiQueue ? 1 : 4))
        #expect(negotiated.backend.flush == (off != .flush && off != .flushAndBarrier))
        #expect(negotiated.backend.barrier == (off != .barrier && off != .flushAndBarrier))
        #expect(negotiated.backend.discard == (off != .discard))
        // The feature key of a disabled indirect path is not even created (blkif.h).
        let indirectKey = try await harness.store.read(harness.nodes.backendPath + "/feature-max-indirect-segments")
        #expect((indirectKey == nil) == (off == .indirect))

        // 1 MiB + 1 sector across the whole request machinery, with concurrent requests.
        let size = 1024 * 1024 + 512
        let data = BlockFrontBackTests.pattern(size, seed: 42)
        try await front.write(at: 7, from: [data])
        let back2 = PageBuffer(pages: 257).slice(from: 0, count: size)
        try await front.read(at: 7, into: [back2])
        #expect(back2.contentsEqual(data))
        try await front.flush()
        if off == .discard {
            await #expect(throws: BlockError.unimplemented(operation: "discard")) {
                try await front.discard(at: 0, count: 8)
            }
        } else {
            try await front.discard(at: 7, count: 8)
        }
        if off == .barrier || off == .flushAndBarrier {
            await #expect(throws: BlockError.self) {
                try await front.writeBarrier(at: 0, from: [data.slice(from: 0, count: 512)])
            }
        } else {
            try await front.writeBarrier(at: 0, from: [data.slice(from: 0, count: 512)])
        }
        await front.disconnect()
        try await back.value
    }

    /// The frontend's own limits cap what the backend offers.
    @Test func frontendLimitsCapTheBackend() async throws {
        let harness = try BlockHarness()
        let back = try await harness.startBackend(MemoryBlockDevice(sizeSectors: 64))
        let front = try await harness.connectFront(
            options: BlockFrontOptions(
                domain: harness.frontDomain.id, maxRingPageOrder: 1, queues: 1, maxIndirectSegments: 64,
                persistentGrants: false))
        #expect(front.negotiated.ringPages == 2)
        #expect(front.negotiated.segmentsPerRequest == 64)
        #expect(!front.negotiated.persistentGrants)
        #expect(try await harness.store.read(harness.nodes.frontendPath + "/feature-persistent") == "0")
        let data = BlockFrontBackTests.pattern(65 * 4096, seed: 1)
        try await front.write(at: 0, from: [data.slice(from: 0, count: 8 * 4096)])
        await front.disconnect()
        try await back.value
    }
}
