import ConsoleBackend
import Synchronization
import Testing
import XenCore

/// Two ends of one console page wired back to back: each end's notify kicks the other (an in-process
/// event channel), so the async engine is exercised without any hypervisor.
struct ConnectedPair {
    let page: PageBuffer
    let guest: ConsoleConnection
    let backend: ConsoleConnection

    init(startIndex: UInt32 = 0) throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        for offset in [
            ConsoleRingLayout.inConsOffset, ConsoleRingLayout.inProdOffset, ConsoleRingLayout.outConsOffset,
            ConsoleRingLayout.outProdOffset,
        ] {
            page.setUInt32(startIndex, at: offset)
        }
        let peers = Mutex<(guest: ConsoleConnection?, backend: ConsoleConnection?)>((nil, nil))
        let guest = ConsoleConnection(ring: try ConsoleRing(page: page, side: .frontend)) {
            peers.withLock { $0.backend }?.kick()
        }
        let backend = ConsoleConnection(ring: try ConsoleRing(page: page, side: .backend)) {
            peers.withLock { $0.guest }?.kick()
        }
        peers.withLock { $0 = (guest, backend) }
        self.page = page
        self.guest = guest
        self.backend = backend
    }
}

/// A deterministic byte pattern and an order-sensitive checksum (Fletcher-64 style).
struct Pattern {
    static func bytes(count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        var result = [UInt8](repeating: 0, count: count)
        result.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                var word = state >> 16
                for index in offset..<min(offset + 6, raw.count) {
                    raw[index] = UInt8(truncatingIfNeeded: word)
                    word >>= 8
                }
                offset += 6
            }
        }
        return result
    }

    var sumA: UInt64 = 0
    var sumB: UInt64 = 0
    var count = 0

    mutating func add(_ bytes: some Collection<UInt8>) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { buffer in add(buffer) }
        if done == nil { Array(bytes).withUnsafeBufferPointer { add($0) } }
    }

    private mutating func add(_ buffer: UnsafeBufferPointer<UInt8>) {
        var a = sumA
        var b = sumB
        // The modulo is deferred: 4096 additions cannot overflow 64 bits from values below the modulus.
        var index = 0
        while index < buffer.count {
            let end = min(index + 4096, buffer.count)
            while index < end {
                a &+= UInt64(buffer[index])
                b &+= a
                index += 1
            }
            a %= 0xFFFF_FFFB
            b %= 0xFFFF_FFFB
        }
        sumA = a
        sumB = b
        count += buffer.count
    }
}

@Suite struct ConsoleConnectionTests {
    @Test func bytesBothWays() async throws {
        let pair = try ConnectedPair()
        try await pair.guest.write(Array("Booting SwiftXen guest\n".utf8))
        #expect(try await pair.backend.read() == Array("Booting SwiftXen guest\n".utf8))
        try await pair.backend.write(Array("root\r".utf8))
        #expect(try await pair.guest.read() == Array("root\r".utf8))
        #expect(pair.backend.statistics.read == 23)
        #expect(pair.backend.statistics.written == 5)
    }

    @Test(arguments: [UInt32(0), UInt32.max - 100])
    func megabytesWithoutLossOrReorder(start: UInt32) async throws {
        let pair = try ConnectedPair(startIndex: start)
        let total = 2 << 20
        let data = Pattern.bytes(count: total, seed: UInt64(start))
        var expected = Pattern()
        expected.add(data)
        async let sent: Void = {
            var offset = 0
            while offset < total {
                let length = min(total - offset, 1 + (offset * 7919) % 5000)
                try await pair.guest.write(data[offset..<offset + length])
                offset += length
            }
        }()
        var received = Pattern()
        var firstBytes: [UInt8] = []
        while received.count < total {
            let chunk = try await pair.backend.read()
            if firstBytes.count < 64 { firstBytes += chunk.prefix(64 - firstBytes.count) }
            received.add(chunk)
        }
        try await sent
        #expect(received.count == total)
        #expect(received.sumA == expected.sumA && received.sumB == expected.sumB)
        #expect(firstBytes == Array(data.prefix(64)))
        #expect(pair.page.uint32(at: ConsoleRingLayout.outProdOffset) == start &+ UInt32(total))
    }

    @Test func slowReaderBackPressuresTheWriter() async throws {
        let pair = try ConnectedPair()
        let data = Pattern.bytes(count: 20_000, seed: 7)
        let writer = Task { try await pair.guest.write(data) }
        var received: [UInt8] = []
        while received.count < data.count {
            // The reader takes small bites and yields: the writer must wait, never drop.
            received += try await pair.backend.read(maximum: 300)
            await Task.yield()
            // Never more in flight than the ring holds: nothing is buffered (or lost) elsewhere.
            let inFlight = pair.guest.statistics.written - pair.backend.statistics.read
            #expect(inFlight <= UInt64(ConsoleRingLayout.outSize))
        }
        try await writer.value
        #expect(received == data)
    }

    @Test func concurrentWritersStayContiguous() async throws {
        let pair = try ConnectedPair()
        let messages = (0..<8).map { index in [UInt8](repeating: UInt8(65 + index), count: 3000) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for message in messages { group.addTask { try await pair.guest.write(message) } }
            var received: [UInt8] = []
            while received.count < 8 * 3000 { received += try await pair.backend.read() }
            try await group.waitForAll()
            // Each 3000-byte message arrives as one run of its letter.
            var runs: [UInt8] = []
            for byte in received where runs.last != byte { runs.append(byte) }
            #expect(runs.count == 8)
            #expect(Set(runs).count == 8)
        }
    }

    @Test func closingMidStreamEndsBothSidesCleanly() async throws {
        let pair = try ConnectedPair()
        let data = Pattern.bytes(count: 100_000, seed: 3)
        let writer = Task { () -> ConsoleError? in
            do throws(ConsoleError) {
                try await pair.guest.write(data)
                return nil
            } catch {
                return error
            }
        }
        var received: [UInt8] = []
        while received.count < 5000 { received += try await pair.backend.read() }
        pair.guest.close()
        pair.backend.close()
        let writerError = await writer.value
        guard case .closed = writerError else {
            Issue.record("writer ended with \(String(describing: writerError))")
            return
        }
        // Everything received so far is a prefix of what was sent.
        #expect(Array(data.prefix(received.count)) == received)
        await #expect(throws: ConsoleError.self) { _ = try await pair.backend.read() }
        var iterator = pair.backend.bytes.makeAsyncIterator()
        #expect(try await iterator.next() == nil)
    }

    @Test func maliciousProducerDisconnectsWithTypedError() async throws {
        let pair = try ConnectedPair()
        let reader = Task { () -> ConsoleError? in
            do throws(ConsoleError) {
                for try await _ in pair.backend.bytes {}
                return nil
            } catch {
                return error
            }
        }
        try await pair.guest.write(Array("ok".utf8))
        // The guest scribbles an impossible producer index and kicks.
        pair.page.setUInt32(0x4000_0000, at: ConsoleRingLayout.outProdOffset)
        pair.backend.kick()
        let error = await reader.value
        guard case .protocolViolation(.producerOutOfRange(ring: .output, _, _, _)) = error else {
            Issue.record("expected a producer violation, got \(String(describing: error))")
            return
        }
        // The console stays down with the same error.
        guard case .protocolViolation = pair.backend.failure else {
            Issue.record("console not marked failed")
            return
        }
        await #expect(throws: ConsoleError.self) { try await pair.backend.write([1]) }
    }

    @Test func cancellingAReaderConsumesNothing() async throws {
        let pair = try ConnectedPair()
        let reader = Task { try await pair.backend.read() }
        await Task.yield()
        reader.cancel()
        _ = await reader.result
        try await pair.guest.write(Array("after".utf8))
        #expect(try await pair.backend.read() == Array("after".utf8))
    }
}
