import Foundation
import NBDClient
import NBDProtocol
import Testing
import XenCore

/// Reads into and writes from a ``SplicePipe``: data spliced socket → pipe → socket on plain connections,
/// copied through pages under TLS; holes and short chunks, out-of-order answers, and misuse.
@Suite("NBDClient pipe reads and writes", .serialized)
struct SpliceTests {
    /// Bytes of an export read back through buffers.
    private func readBack(_ client: NBDClient, at offset: UInt64, count: Int) async throws -> PageBuffer {
        let back = PageBuffer(pages: (count + 4095) / 4096).slice(from: 0, count: count)
        try await client.read(at: offset, into: [back])
        return back
    }

    @Test func relayBetweenTwoServersOnEveryConnection() async throws {
        let source = try NBDKit(["memory", "size=16M"])
        defer { source.stop() }
        let destination = try NBDKit(["memory", "size=16M"])
        defer { destination.stop() }
        let options = NBDClientOptions(connections: 2)
        let from = try await NBDClient.connect(uri: source.uri(), options: options)
        let to = try await NBDClient.connect(uri: destination.uri(), options: options)
        #expect(from.splicesData && to.splicesData)
        let data = pattern(8 << 20, seed: 9)
        try await from.write(at: 0, from: [data])
        // Eight workers, each with its own pipe, some on the source's I/O threads (as the copy runs them),
        // requests of 1 MiB and of odd lengths.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask(executorPreference: worker % 2 == 0 ? from.taskExecutor(connection: worker) : nil) {
                    let pipe = try SplicePipe(capacity: 1 << 20)
                    for piece in stride(from: worker, to: 8, by: 8) {
                        let offset = UInt64(piece) << 20
                        try await from.read(at: offset, length: 1 << 20, into: pipe)
                        #expect(pipe.count == 1 << 20)
                        try await to.write(at: offset, length: 1 << 20, from: pipe)
                        #expect(pipe.count == 0)
                    }
                    let odd = 3 * 4096 + UInt64(worker) * 8192
                    try await from.read(at: odd, length: 12288, into: pipe)
                    try await to.write(at: (8 << 20) + odd, length: 12288, from: pipe)
                }
            }
            try await group.waitForAll()
        }
        #expect(try await readBack(to, at: 0, count: 8 << 20).contentsEqual(data))
        for worker in 0..<8 {
            let odd = 3 * 4096 + worker * 8192
            let back = try await readBack(to, at: UInt64((8 << 20) + odd), count: 12288)
            #expect(back.contentsEqual(data.slice(from: odd, count: 12288)))
        }
        await from.disconnect()
        await to.disconnect()
    }

    @Test func misuseIsRefusedBeforeAnythingIsSent() async throws {
        let server = try NBDKit(["memory", "size=4M"])
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri())
        let pipe = try SplicePipe(capacity: 64 << 10)
        #expect(pipe.capacity >= 64 << 10)
        // Longer than the pipe; a READ into a pipe that is not empty; a WRITE of more than it holds.
        await #expect(throws: NBDError.self) { try await client.read(at: 0, length: pipe.capacity + 4096, into: pipe) }
        let four = pattern(4096, seed: 1)
        #expect(pipe.append(UnsafeRawBufferPointer(start: four.pointer, count: 4096)))
        await #expect(throws: NBDError.self) { try await client.read(at: 0, length: 4096, into: pipe) }
        await #expect(throws: NBDError.self) { try await client.write(at: 0, length: 8192, from: pipe) }
        // The client is unharmed, and the pipe's 4 KiB go out as a WRITE.
        try await client.write(at: 4096, length: 4096, from: pipe)
        #expect(try await readBack(client, at: 4096, count: 4096).contentsEqual(four))
        // Beyond the export, or past the end: refused like any request.
        await #expect(throws: NBDError.self) { try await client.read(at: 4 << 20, length: 4096, into: pipe) }
        await client.disconnect()
        await #expect(throws: NBDError.disconnected) { try await client.read(at: 0, length: 4096, into: pipe) }
    }

    @Test func underTLSThePipeIsFilledThroughPages() async throws {
        let certificates = FileManager.default.temporaryDirectory.appendingPathComponent("splice-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: certificates, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: certificates) }
        try makeCertificates(in: certificates)
        let server = try NBDKit(
            ["memory", "size=1M"], extra: ["--tls=require", "--tls-certificates=\(certificates.path)"])
        defer { server.stop() }
        let client = try await NBDClient.connect(
            uri: server.uri(tls: true, query: "tls-certificates=\(certificates.path)&tls-hostname=localhost"))
        #expect(!client.splicesData)
        let data = pattern(256 << 10, seed: 3)
        try await client.write(at: 0, from: [data])
        let pipe = try SplicePipe(capacity: 256 << 10)
        try await client.read(at: 0, length: 256 << 10, into: pipe)
        #expect(pipe.count == 256 << 10)
        try await client.write(at: 512 << 10, length: 256 << 10, from: pipe)
        #expect(pipe.count == 0)
        #expect(try await readBack(client, at: 512 << 10, count: 256 << 10).contentsEqual(data))
        await client.disconnect()
    }

    /// A scripted server answering one 16 KiB READ with the chunks `chunks` (type, offset within the
    /// request, length; data bytes are the offset's low byte + 1), then a 4 KiB READ with plain data.
    private func scripted(_ chunks: [(type: UInt16, at: Int, count: Int)]) throws -> ScriptedServer {
        try ScriptedServer { connection in
            guard connection.handshake() else { return }
            guard let first = connection.request() else { return }
            for (index, piece) in chunks.enumerated() {
                let done: UInt16 = index == chunks.count - 1 ? 1 : 0
                let offset = be64(first.offset + UInt64(piece.at))
                let payload =
                    piece.type == 1
                    ? offset + [UInt8](repeating: UInt8(truncatingIfNeeded: piece.at >> 12) + 1, count: piece.count)
                    : offset + withUnsafeBytes(of: UInt32(piece.count).bigEndian) { Array($0) }
                connection.write(chunk(piece.type, flags: done, cookie: first.cookie, payload: payload))
            }
            guard let second = connection.request() else { return }
            connection.write(dataChunk(cookie: second.cookie, offset: second.offset))
            _ = connection.request()
        }
    }

    @Test func shortDataChunksAndHolesArriveInOrder() async throws {
        // Data, a hole, a 100-byte run (read through the staging buffer), then the rest.
        let server = try scripted([(1, 0, 4096), (2, 4096, 8192), (1, 12288, 100), (1, 12388, 3996)])
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri)
        let pipe = try SplicePipe(capacity: 16384)
        try await client.read(at: 0, length: 16384, into: pipe)
        let back = PageBuffer(pages: 4)
        #expect(pipe.take(into: back))
        var expected = [UInt8](repeating: 1, count: 4096) + [UInt8](repeating: 0, count: 8192)
        expected += [UInt8](repeating: 4, count: 100) + [UInt8](repeating: 4, count: 3996)
        #expect(back.bytes == expected)
        #expect(pipe.count == 0)
        await client.disconnect()
        server.stop()
    }

    @Test func chunksOutOfOrderFailOnlyThatRead() async throws {
        // The second half first: legal NBD, which a pipe cannot take in order.
        let server = try scripted([(1, 8192, 8192), (1, 0, 8192)])
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri)
        let pipe = try SplicePipe(capacity: 16384)
        await #expect(throws: NBDError.unsupported("a READ into a pipe answered out of order")) {
            try await client.read(at: 0, length: 16384, into: pipe)
        }
        // The rest of that reply was consumed and dropped: the connection goes on.
        pipe.discard()
        #expect(pipe.count == 0)
        try await client.read(at: 0, length: 4096, into: pipe)
        let back = PageBuffer(pages: 1)
        #expect(pipe.take(into: back))
        #expect(back.bytes == [UInt8](repeating: 9, count: 4096))
        await client.disconnect()
    }

    @Test func aLyingServerFailsAPipeReadTypedAndNeverHangs() async throws {
        // Data outside the request: a protocol error that ends the connection.
        let outside = try ScriptedServer { connection in
            guard connection.handshake(), let request = connection.request() else { return }
            connection.write(
                chunk(1, flags: 1, cookie: request.cookie, payload: be64(request.offset + 8192) + [1, 2, 3, 4]))
            _ = connection.request()
        }
        defer { outside.stop() }
        let first = try await NBDClient.connect(uri: outside.uri)
        let pipe = try SplicePipe(capacity: 16384)
        await #expect(throws: NBDError.self) { try await first.read(at: 0, length: 8192, into: pipe) }
        await #expect(throws: NBDError.self) { try await first.read(at: 0, length: 4096, into: SplicePipe()) }
        await first.disconnect()
        // A simple reply promising 8 KiB, 100 bytes of it spliced, then EOF: disconnected, not a hang.
        let truncated = try ScriptedServer { connection in
            guard connection.handshake(structured: false), let request = connection.request() else { return }
            var writer = NBDWriter()
            writer.put(NBDMagic.simpleReply)
            writer.put(UInt32(0))
            writer.put(request.cookie)
            connection.write(writer.bytes + [UInt8](repeating: 7, count: 100))
        }
        defer { truncated.stop() }
        let second = try await NBDClient.connect(uri: truncated.uri)
        let other = try SplicePipe(capacity: 16384)
        await #expect(throws: NBDError.disconnected) { try await second.read(at: 0, length: 8192, into: other) }
        await second.disconnect()
    }
}
