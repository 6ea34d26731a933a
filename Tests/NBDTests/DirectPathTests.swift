import Foundation
import NBDClient
import NBDProtocol
import Testing
import XenCore

/// Reads and writes from an actor isolated to a connection's I/O thread (``NBDClient/executor``).
actor IOThreadWorker {
    let client: NBDClient
    nonisolated let unownedExecutor: UnownedSerialExecutor

    init(_ client: NBDClient) {
        self.client = client
        self.unownedExecutor = client.executor.asUnownedSerialExecutor()
    }

    /// Writes `count` 4 KiB blocks from `first` with 8 in flight, reads them back, returns the mismatches.
    func roundTrip(first: Int, count: Int) async throws -> Int {
        try await withThrowingTaskGroup(of: Int.self) { group in
            for slot in 0..<8 {
                group.addTask {
                    var bad = 0
                    for block in stride(from: first + slot, to: first + count, by: 8) {
                        let data = pattern(4096, seed: UInt8(truncatingIfNeeded: block))
                        try await self.client.write(at: UInt64(block) * 4096, from: [data])
                        let back = PageBuffer(pages: 1)
                        try await self.client.read(at: UInt64(block) * 4096, into: [back])
                        if !back.contentsEqual(data) { bad += 1 }
                    }
                    return bad
                }
            }
            var total = 0
            for try await bad in group { total += bad }
            return total
        }
    }
}

/// The plain-connection transmission path (its own I/O thread per connection): executors, split requests
/// read straight into several buffers, multi-conn affinity, and requests in flight at disconnect.
@Suite("NBDClient direct path against nbdkit", .serialized)
struct DirectPathTests {
    @Test func actorOnTheIOThread() async throws {
        let server = try NBDKit(["memory", "size=4M"])
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri())
        let bad = try await IOThreadWorker(client).roundTrip(first: 0, count: 256)
        #expect(bad == 0)
        await client.disconnect()
        await #expect(throws: NBDError.disconnected) { try await client.read(at: 0, into: [PageBuffer(pages: 1)]) }
    }

    @Test func splitReadsIntoManyBuffersOnEveryConnection() async throws {
        let server = try NBDKit(["memory", "size=8M"])
        defer { server.stop() }
        let client = try await NBDClient.connect(
            uri: server.uri(), options: NBDClientOptions(connections: 3, maxRequestBytes: 20480))
        #expect(client.connectionCount == 3 && client.maxRequestBytes == 20480)
        let data = pattern(1 << 20, seed: 5)
        try await client.write(at: 4096, from: [data])
        // Uneven buffers (one of them smaller than a page) so pieces and reads straddle buffer edges.
        let sizes = [4096, 12288, 1000, 3096, 65536, (1 << 20) - 86016]
        let buffers = sizes.map { PageBuffer(pages: ($0 + 4095) / 4096).slice(from: 0, count: $0) }
        try await client.read(at: 4096, into: buffers)
        var offset = 0
        for buffer in buffers {
            #expect(buffer.contentsEqual(data.slice(from: offset, count: buffer.count)))
            offset += buffer.count
        }
        // Workers on each connection's I/O thread, as the benchmark runs them.
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for worker in 0..<6 {
                group.addTask(executorPreference: client.taskExecutor(connection: worker)) {
                    let back = PageBuffer(pages: 5)
                    let at = UInt64(worker) * 20480
                    try await client.read(at: 4096 + at, into: [back])
                    return back.contentsEqual(data.slice(from: Int(at), count: 20480))
                }
            }
            for try await same in group { #expect(same) }
        }
        await client.disconnect()
    }

    @Test func disconnectWithRequestsInFlight() async throws {
        let server = try NBDKit(["--filter=delay", "memory", "size=1M", "rdelay=2"])
        defer { server.stop() }
        let client = try await NBDClient.connect(uri: server.uri())
        let results = await withTaskGroup(of: NBDError?.self) { group in
            for index in 0..<16 {
                group.addTask {
                    do {
                        try await client.read(at: UInt64(index) * 4096, into: [PageBuffer(pages: 1)])
                        return nil
                    } catch let error as NBDError { return error } catch { return .io("\(error)") }
                }
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(50))
                await client.disconnect()
                return nil
            }
            var all: [NBDError?] = []
            for await result in group { all.append(result) }
            return all
        }
        // Nothing hangs; whatever did not complete failed as disconnected.
        #expect(results.count == 17)
        let disconnected = results.filter { $0 == NBDError.disconnected }.count
        let succeeded = results.filter { $0 == nil }.count
        #expect(disconnected + succeeded == 17, "\(results)")
        #expect(disconnected > 0)
    }
}
