import BlockDevice
import Foundation
import Testing
import XenCore

/// The allocation map, write-zeroes and non-waiting reads of the memory and file devices, and how the
/// safe decorator passes them on.
@Suite struct AllocationTests {
    private static let chunk = UInt64(MemoryBlockDevice.chunkSize / 512)

    @Test func memoryDeviceTracksChunksWrittenAndUnmapped() async throws {
        let device = MemoryBlockDevice(sizeSectors: 8 * Self.chunk)
        #expect(
            try await device.allocation(at: 0, count: 8 * Self.chunk) == [
                BlockExtent(sectors: 8 * Self.chunk, isHole: true, isZero: true)
            ])
        // One sector written makes its whole chunk data.
        try await device.write(at: Self.chunk + 3, from: [PageBuffer(copying: [UInt8](repeating: 9, count: 512))])
        #expect(
            try await device.allocation(at: 0, count: 8 * Self.chunk) == [
                BlockExtent(sectors: Self.chunk, isHole: true, isZero: true),
                BlockExtent(sectors: Self.chunk, isHole: false, isZero: false),
                BlockExtent(sectors: 6 * Self.chunk, isHole: true, isZero: true),
            ])
        // The map starts where asked and stops at the count.
        #expect(
            try await device.allocation(at: Self.chunk + 5, count: 10) == [
                BlockExtent(sectors: 10, isHole: false, isZero: false)
            ])
        // Zeroing without unmap keeps the chunk allocated; with unmap only whole chunks become holes.
        try await device.writeZeroes(at: Self.chunk, count: Self.chunk, unmap: false, fast: true)
        #expect(try await device.allocation(at: Self.chunk, count: 1)?.first?.isHole == false)
        try await device.writeZeroes(at: Self.chunk, count: Self.chunk - 1, unmap: true, fast: false)
        #expect(try await device.allocation(at: Self.chunk, count: 1)?.first?.isHole == false)
        try await device.discard(at: Self.chunk, count: Self.chunk)
        #expect(try await device.allocation(at: Self.chunk, count: 1)?.first?.isHole == true)
        let back = PageBuffer(pages: 1)
        #expect(device.readWithoutWaiting(at: Self.chunk + 3, into: [back]))
        #expect(back.bytes.allSatisfy { $0 == 0 })
        // Out of range: no read, no map.
        #expect(!device.readWithoutWaiting(at: 8 * Self.chunk, into: [back]))
        await #expect(throws: BlockError.self) { try await device.allocation(at: 8 * Self.chunk, count: 1) }
    }

    @Test func memoryDeviceZeroesPartialPages() async throws {
        let device = MemoryBlockDevice(sizeSectors: 64)
        try await device.write(at: 0, from: [PageBuffer(copying: [UInt8](repeating: 0xff, count: 64 * 512))])
        // Sectors 3..<20 span partial pages at both ends and whole pages between.
        try await device.writeZeroes(at: 3, count: 17, unmap: true, fast: false)
        let back = PageBuffer(pages: 8)
        try await device.read(at: 0, into: [back])
        let bytes = back.bytes
        #expect(bytes[0..<1536].allSatisfy { $0 == 0xff })
        #expect(bytes[1536..<10240].allSatisfy { $0 == 0 })
        #expect(bytes[10240...].allSatisfy { $0 == 0xff })
    }

    @Test func fileDeviceMapsHolesAndPunchesThem() async throws {
        let path = NSTemporaryDirectory() + "swiftxen-sparse-\(UUID().uuidString).img"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let fd = open(path, O_RDWR | O_CREAT, 0o644)
        #expect(ftruncate(fd, 4 << 20) == 0)
        let data = [UInt8](repeating: 0x5a, count: 65536)
        #expect(pwrite(fd, data, data.count, 1 << 20) == data.count)
        close(fd)
        let device = try FileBlockDevice(path: path)
        let sectors = UInt64(4 << 20) / 512
        let map = try #require(try await device.allocation(at: 0, count: sectors))
        #expect(map.map(\.sectors).reduce(0, +) == sectors)
        // Data where it was written (file systems allocate in blocks of at most 64 KiB here).
        let dataExtents = map.filter { !$0.isHole }
        #expect(dataExtents.count == 1 && dataExtents[0].sectors >= 128)
        #expect(map.first?.isHole == true && map.last?.isHole == true)
        // Reads from the page cache need no wait; the bytes are the file's.
        let back = PageBuffer(pages: 16)
        if device.readWithoutWaiting(at: 2048, into: [back]) { #expect(back.bytes == data) }
        try await device.read(at: 2048, into: [back])
        #expect(back.bytes == data)
        // Punching the data out makes the whole file a hole that reads as zeroes.
        try await device.writeZeroes(at: 2048, count: 128, unmap: true, fast: true)
        #expect(
            try await device.allocation(at: 0, count: sectors) == [
                BlockExtent(sectors: sectors, isHole: true, isZero: true)
            ])
        try await device.read(at: 2048, into: [back])
        #expect(back.bytes.allSatisfy { $0 == 0 })
        await device.disconnect()
        #expect(!device.readWithoutWaiting(at: 0, into: [back]))
    }

    @Test func defaultsAndTheSafeDecorator() async throws {
        let safe = SafeBlockDevice(MemoryBlockDevice(sizeSectors: 2 * Self.chunk))
        try await safe.write(at: 0, from: [PageBuffer(pages: 1)])
        #expect(try await safe.allocation(at: 0, count: 2 * Self.chunk)?.count == 2)
        // The decorator never reads without checking, so it never reads without waiting.
        #expect(!safe.readWithoutWaiting(at: 0, into: [PageBuffer(pages: 1)]))
        await #expect(throws: BlockError.self) {
            try await safe.writeZeroes(at: 2 * Self.chunk, count: 1, unmap: true, fast: false)
        }
        let readOnly = SafeBlockDevice(MemoryBlockDevice(sizeSectors: 8, readWrite: false))
        await #expect(throws: BlockError.isReadOnly) {
            try await readOnly.writeZeroes(at: 0, count: 1, unmap: false, fast: false)
        }
        // A device with only the protocol's defaults: no map, slow zeroing refused when fast, done when not.
        let plain = PlainDevice(base: MemoryBlockDevice(sizeSectors: 16))
        #expect(try await plain.allocation(at: 0, count: 16) == nil)
        await #expect(throws: BlockError.unimplemented(operation: "fast zero")) {
            try await plain.writeZeroes(at: 0, count: 4, unmap: true, fast: true)
        }
        try await plain.write(at: 0, from: [PageBuffer(copying: [UInt8](repeating: 1, count: 8192))])
        try await plain.writeZeroes(at: 2, count: 4, unmap: true, fast: false)
        let back = PageBuffer(pages: 2)
        try await plain.read(at: 0, into: [back])
        #expect(back.bytes[0..<1024].allSatisfy { $0 == 1 } && back.bytes[1024..<3072].allSatisfy { $0 == 0 })
    }
}

/// Implements only what `BlockDevice` requires, to exercise the protocol's defaults.
private struct PlainDevice: BlockDevice {
    let base: MemoryBlockDevice
    func info() async -> BlockDeviceInfo { await base.info() }
    func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        try await base.read(at: sector, into: buffers)
    }
    func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        try await base.write(at: sector, from: buffers)
    }
    func disconnect() async {}
}
