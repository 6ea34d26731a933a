import BlockDevice
import Foundation
import Testing
import XenCore

/// The safe decorator and the file-backed device, plus the BlockDevice contract run over every implementation.
@Suite struct DecoratorTests {
    private static func tempFile(bytes: Int) throws -> String {
        let path = NSTemporaryDirectory() + "swiftxen-block-\(UUID().uuidString).img"
        _ = FileManager.default.createFile(atPath: path, contents: Data(count: bytes))
        return path
    }

    @Test func safeRejectsBadRequestsBeforeTheBase() async throws {
        let base = MemoryBlockDevice(sizeSectors: 16)
        let safe = SafeBlockDevice(base)
        let page = PageBuffer(pages: 1)
        await #expect(throws: BlockError.self) { try await safe.read(at: 9, into: [page]) }
        await #expect(throws: BlockError.self) { try await safe.write(at: 0, from: [page.slice(from: 0, count: 700)]) }
        await #expect(throws: BlockError.self) { try await safe.discard(at: UInt64.max, count: 2) }
        await #expect(throws: BlockError.self) { try await safe.read(at: UInt64.max - 3, into: [page]) }
        try await safe.write(at: 8, from: [page])
        let readOnly = SafeBlockDevice(MemoryBlockDevice(sizeSectors: 16, readWrite: false))
        await #expect(throws: BlockError.isReadOnly) { try await readOnly.write(at: 0, from: [page]) }
        await #expect(throws: BlockError.isReadOnly) { try await readOnly.discard(at: 0, count: 1) }
    }

    @Test func fileDeviceReadsWritesFlushesDiscards() async throws {
        let path = try Self.tempFile(bytes: 64 * 1024 + 100)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let device = try FileBlockDevice(path: path)
        let info = await device.info()
        #expect(info == BlockDeviceInfo(readWrite: true, sectorSize: 512, sizeSectors: 128))
        let data = PageBuffer(copying: (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7) })
        try await device.write(at: 3, from: [data.slice(from: 0, count: 512), data.slice(from: 512, count: 7680)])
        try await device.flush()
        let back = PageBuffer(pages: 2)
        try await device.read(at: 3, into: [back])
        #expect(back.contentsEqual(data))
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect([UInt8](onDisk[1536..<(1536 + 8192)]) == data.bytes)
        try await device.discard(at: 4, count: 2)
        try await device.read(at: 3, into: [back])
        #expect(back.slice(from: 512, count: 1024).bytes.allSatisfy { $0 == 0 })
        #expect(back.slice(from: 1536, count: 512).contentsEqual(data.slice(from: 1536, count: 512)))
        await #expect(throws: BlockError.self) { try await device.read(at: 127, into: [back]) }
        await device.disconnect()
        await #expect(throws: BlockError.disconnected) { try await device.read(at: 0, into: [back]) }
    }

    @Test func fileDeviceErrors() async throws {
        #expect(throws: BlockError.self) { try FileBlockDevice(path: "/nonexistent/swiftxen.img") }
        let path = try Self.tempFile(bytes: 8192)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: BlockError.self) { try FileBlockDevice(path: path, sectorSize: 1000) }
        let readOnly = try FileBlockDevice(path: path, sectorSize: 4096, readOnly: true)
        #expect(await readOnly.info() == BlockDeviceInfo(readWrite: false, sectorSize: 4096, sizeSectors: 2))
        await #expect(throws: BlockError.isReadOnly) { try await readOnly.write(at: 0, from: [PageBuffer(pages: 1)]) }
    }

    /// The Mirage_block.S contract, over every implementation in this target.
    @Test(arguments: ["memory", "file", "safe-file"])
    func contract(kind: String) async throws {
        let path = try Self.tempFile(bytes: 256 * 4096)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let device: any BlockDevice =
            switch kind {
            case "memory": MemoryBlockDevice(sizeSectors: 256, sectorSize: 4096)
            case "file": try FileBlockDevice(path: path, sectorSize: 4096)
            default: SafeBlockDevice(try FileBlockDevice(path: path, sectorSize: 4096))
            }
        let info = await device.info()
        #expect(info.sizeSectors == 256 && info.sectorSize == 4096)
        var reference = [UInt8](repeating: 0, count: 256 * 4096)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let sector = Int.random(in: 0..<250, using: &generator)
            let counts = (0..<Int.random(in: 1...3, using: &generator)).map { _ in Int.random(in: 1...2) }
            let buffers = counts.map { count in
                PageBuffer(copying: (0..<count * 4096).map { _ in UInt8.random(in: 0...255, using: &generator) })
            }
            try await device.write(at: UInt64(sector), from: buffers)
            var offset = sector * 4096
            for buffer in buffers {
                reference.replaceSubrange(offset..<offset + buffer.count, with: buffer.bytes)
                offset += buffer.count
            }
        }
        let all = PageBuffer(pages: 256)
        try await device.read(at: 0, into: [all])
        #expect(all.bytes == reference)
        await #expect(throws: BlockError.self) { try await device.read(at: 0, into: [all.slice(from: 0, count: 512)]) }
        await #expect(throws: BlockError.self) {
            try await device.write(at: 256, from: [all.slice(from: 0, count: 4096)])
        }
        await device.disconnect()
        await #expect(throws: BlockError.disconnected) { try await device.read(at: 0, into: [all]) }
    }
}
