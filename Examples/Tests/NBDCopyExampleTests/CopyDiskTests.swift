import BlockDevice
import Foundation
import NBDCopyExample
import NBDServer
import Testing
import XenCore

/// Serves `exports` on a unix socket in a fresh temporary directory for the duration of `body`.
@discardableResult
func withNBDServer<T>(
    _ exports: [NBDServerExport], _ body: (_ socket: String) async throws -> T
) async throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbd-\(UUID())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
    defer { try? FileManager.default.removeItem(at: directory) }
    let socket = directory.appendingPathComponent("nbd.sock").path
    let server = try await NBDServer(exports: exports)
    let listener: NBDServerListener
    do { listener = try server.listen(on: .unix(path: socket)) } catch {
        await server.shutdown()
        throw error
    }
    let result: Result<T, any Error>
    do { result = .success(try await body(socket)) } catch { result = .failure(error) }
    listener.stop()
    await server.shutdown()
    return try result.get()
}

@Test func copiesEveryByte() async throws {
    let size = (2048 + 3) * 512  // 1 MiB and three sectors: the last chunk is short
    let source = MemoryBlockDevice(sizeSectors: UInt64(size / 512))
    let original = PageBuffer(copying: (0..<size).map { UInt8(truncatingIfNeeded: $0 * 31 + $0 >> 9) })
    try await source.write(at: 0, from: [original])
    let destination = MemoryBlockDevice(sizeSectors: 4096)

    let copied = try await withNBDServer([
        NBDServerExport(name: "source", device: source, readOnly: true),
        NBDServerExport(name: "destination", device: destination),
    ]) { socket in
        try await copyDisk(
            from: "nbd+unix:///source?socket=\(socket)", to: "nbd+unix:///destination?socket=\(socket)",
            chunkBytes: 64 << 10)
    }

    #expect(copied == UInt64(size))
    let result = PageBuffer(copying: [UInt8](repeating: 0xFF, count: size + 512))
    try await destination.read(at: 0, into: [result])
    #expect(result.slice(from: 0, count: original.count).contentsEqual(original))
    let zeroes = PageBuffer(copying: [UInt8](repeating: 0, count: 512))
    #expect(result.slice(from: original.count, count: 512).contentsEqual(zeroes))  // the rest is untouched
}

@Test func refusesASmallerDestination() async throws {
    let exports = [
        NBDServerExport(name: "big", device: MemoryBlockDevice(sizeSectors: 16)),
        NBDServerExport(name: "small", device: MemoryBlockDevice(sizeSectors: 8)),
    ]
    try await withNBDServer(exports) { socket in
        await #expect(throws: CopyDiskError.destinationTooSmall(source: 8192, destination: 4096)) {
            try await copyDisk(from: "nbd+unix:///big?socket=\(socket)", to: "nbd+unix:///small?socket=\(socket)")
        }
    }
}
