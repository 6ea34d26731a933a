import BlockDevice
import Testing
import XenCore

@Suite struct MemoryBlockDeviceTests {
    @Test func roundTripAcrossBuffers() async throws {
        let device = MemoryBlockDevice(sizeSectors: 64)
        let a = PageBuffer(copying: [UInt8](repeating: 0xAB, count: 512))
        let b = PageBuffer(copying: [UInt8](repeating: 0xCD, count: 1024))
        try await device.write(at: 3, from: [a, b])
        let back = PageBuffer(pages: 1).slice(from: 0, count: 1536)
        try await device.read(at: 3, into: [back])
        #expect(back.bytes == a.bytes + b.bytes)
    }

    @Test func errorsAreTyped() async {
        let device = MemoryBlockDevice(sizeSectors: 8, readWrite: false)
        let page = PageBuffer(pages: 1)
        await #expect(throws: BlockError.isReadOnly) { try await device.write(at: 0, from: [page]) }
        await #expect(throws: BlockError.self) { try await device.read(at: 7, into: [page]) }
        await #expect(throws: BlockError.self) { try await device.read(at: 0, into: [page.slice(from: 0, count: 100)]) }
        await device.disconnect()
        await #expect(throws: BlockError.disconnected) { try await device.read(at: 0, into: [page]) }
    }
}
