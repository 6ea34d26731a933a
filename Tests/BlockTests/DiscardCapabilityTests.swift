import BlockBack
import BlockDevice
import BlockFront
import Synchronization
import Testing
import XenCore

/// BlockBack advertises discard from what the device states (`BlockDevice.supportsDiscard`), and sends the
/// device nothing to find out.
@Suite struct DiscardCapabilityTests {
    /// A memory device that says whether it discards as told, and records every discard it receives.
    final class StatingDevice: BlockDevice {
        let base = MemoryBlockDevice(sizeSectors: 1024)
        let states: Bool
        private let received = Mutex<[(UInt64, UInt64)]>([])
        init(states: Bool) { self.states = states }
        var discards: [(UInt64, UInt64)] { received.withLock { $0 } }
        var supportsDiscard: Bool { states }
        func info() async -> BlockDeviceInfo { await base.info() }
        func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
            try await base.read(at: sector, into: buffers)
        }
        func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
            try await base.write(at: sector, from: buffers)
        }
        func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
            received.withLock { $0.append((sector, count)) }
            try await base.discard(at: sector, count: count)
        }
        func disconnect() async { await base.disconnect() }
    }

    @Test(arguments: [true, false]) func advertisedAsTheDeviceStates(_ states: Bool) async throws {
        let harness = try BlockHarness()
        let device = StatingDevice(states: states)
        let back = try await harness.startBackend(device)
        let front = try await harness.connectFront()
        #expect(front.negotiated.backend.discard == states)
        #expect(front.supportsDiscard == states, "BlockFront states what its backend advertised")
        #expect(device.discards.isEmpty, "no probe reached the device")
        if states {
            try await front.discard(at: 8, count: 8)
            #expect(device.discards.map(\.0) == [8] && device.discards.map(\.1) == [8])
        } else {
            await #expect(throws: BlockError.unimplemented(operation: "discard")) {
                try await front.discard(at: 8, count: 8)
            }
            #expect(device.discards.isEmpty)
        }
        await front.disconnect()
        try await back.value
    }

    /// A read-only vbd advertises no discard even over a device that discards.
    @Test func aReadOnlyVbdAdvertisesNoDiscard() async throws {
        let harness = try BlockHarness(writable: false)
        let back = try await harness.startBackend(StatingDevice(states: true))
        let front = try await harness.connectFront()
        #expect(!front.negotiated.backend.discard)
        await front.disconnect()
        try await back.value
    }
}
