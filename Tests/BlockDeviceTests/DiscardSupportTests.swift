import BlockDevice
import Foundation
import Testing
import XenCore

/// Every device in the package states whether it discards, and the decorator passes its base's answer on.
@Suite struct DiscardSupportTests {
    /// A device with only the required members: the defaults apply.
    private struct MinimalDevice: BlockDevice {
        func info() async -> BlockDeviceInfo { BlockDeviceInfo(readWrite: true, sectorSize: 512, sizeSectors: 8) }
        func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {}
        func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {}
        func disconnect() async {}
    }

    /// The answer as a backend gets it: through the protocol.
    private static func states(_ device: any BlockDevice) async -> Bool { await device.supportsDiscard }

    @Test func aDeviceWithTheDefaultDiscardSaysItHasNone() async {
        let device = MinimalDevice()
        #expect(await Self.states(device) == false)
        await #expect(throws: BlockError.unimplemented(operation: "discard")) {
            try await device.discard(at: 0, count: 1)
        }
    }

    @Test func memoryAndFileDevicesDiscard() async throws {
        #expect(await Self.states(MemoryBlockDevice(sizeSectors: 16)))
        #expect(await Self.states(MemoryBlockDevice(sizeSectors: 16, readWrite: false)), "read-only is separate")
        let path = NSTemporaryDirectory() + "swiftxen-discard-\(UUID().uuidString).img"
        _ = FileManager.default.createFile(atPath: path, contents: Data(count: 8192))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try FileBlockDevice(path: path)
        #expect(await Self.states(file))
        await file.disconnect()
    }

    @Test func theSafeDecoratorStatesItsBasesAnswer() async {
        #expect(await SafeBlockDevice(MemoryBlockDevice(sizeSectors: 16)).supportsDiscard)
        #expect(await SafeBlockDevice(MinimalDevice()).supportsDiscard == false)
    }
}
