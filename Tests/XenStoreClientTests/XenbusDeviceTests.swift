import Glibc
import Testing
import XenStoreProtocol

@testable import XenStoreClient

/// The xenbus device transport against stand-in devices: one end of a `SOCK_SEQPACKET` socket pair, so each
/// `write(2)` the transport makes arrives as one message, as the kernel device sees it; the other end is
/// driven by the test itself or by `KernelXenbusStandIn`, which does what the Linux driver does.
@Suite struct XenbusDeviceTests {
    /// Receives the next message (one `write(2)` of the transport) from the device side.
    private func nextMessage(_ descriptor: Int32) async -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let count = buffer.withUnsafeMutableBytes {
                recv(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT))
            }
            if count > 0 { return Array(buffer[0..<count]) }
            if count == 0 { return [] }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    private func send(_ descriptor: Int32, _ packet: XenStorePacket) {
        let bytes = packet.bytes
        _ = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, 0) }
    }

    @Test func onePacketPerWriteAndWatchAcksWithRequestIDZero() async throws {
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0, &ends) == 0)
        let device = ends[1]
        defer { close(device) }
        let client = XenStoreClient(transport: try XenbusDeviceTransport.adopting(descriptor: ends[0]))

        // Three requests at once: the client batches them, the transport must split them again.
        async let a = client.immediate { h throws(XenStoreError) in try await h.read("/a") }
        async let watched: Void = client.immediate { h throws(XenStoreError) in try await h.watch("/w", token: "t") }
        async let b = client.immediate { h throws(XenStoreError) in try await h.read("/b") }
        // One at a time: the next request reaches the device only after the reply to the previous one.
        for _ in 0..<3 {
            let message = await nextMessage(device)
            var parser = XenStorePacketParser()
            parser.append(message)
            let request = try #require(try parser.next())
            #expect(parser.bufferedByteCount == 0, "exactly one packet per write")
            switch request.type {
            case .watch:
                // The device acknowledges WATCH itself; older kernels with req_id 0.
                send(device, XenStorePacket(type: .watch, requestID: 0, payload: Array("OK".utf8) + [0]))
            default:
                let path = String(decoding: request.payload.dropLast(), as: UTF8.self)
                send(device, XenStorePacket(type: .read, requestID: request.requestID, payload: Array(path.utf8)))
            }
        }
        #expect(try await a == "/a")
        #expect(try await b == "/b")
        try await watched

        await client.close()
    }

    /// The kernel device keeps only a pointer to a request's body until its xenbus thread sends it, so a
    /// pipelined write would send the earlier header with the later body (the tier's failure on real Xen:
    /// "a multiplexed read got another request's reply"). Through a faithful stand-in, 64 concurrent reads
    /// of same-length paths must each get their own value, and the device must never hold two at once.
    @Test func concurrentRequestsThroughTheKernelDeviceGetTheirOwnReplies() async throws {
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0, &ends) == 0)
        let kernel = KernelXenbusStandIn(device: ends[1])
        let client = XenStoreClient(transport: try XenbusDeviceTransport.adopting(descriptor: ends[0]))
        try await client.immediate { h throws(XenStoreError) in
            for index in 0..<8 { try await h.write("/m/\(index)", "v\(index)") }
        }
        let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for request in 0..<64 {
                group.addTask {
                    let index = request % 8
                    let value = try await client.immediate { h throws(XenStoreError) in
                        try await h.read("/m/\(index)")
                    }
                    return (index, value)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 64)
        for (index, value) in results { #expect(value == "v\(index)", "read of /m/\(index)") }
        #expect(kernel.aliased == 0)
        #expect(kernel.maxQueued == 1)
        await client.close()
        await kernel.waitUntilClosed()
    }

    /// Watch events arriving while a request is at the device are no reply: they must not let the next
    /// request in early, and requests queued behind a watched write still all complete.
    @Test func watchEventsDoNotOpenTheDeviceGate() async throws {
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0, &ends) == 0)
        let kernel = KernelXenbusStandIn(device: ends[1])
        let client = XenStoreClient(transport: try XenbusDeviceTransport.adopting(descriptor: ends[0]))
        let events = client.events(token: "w")
        var iterator = events.makeAsyncIterator()
        try await client.immediate { h throws(XenStoreError) in try await h.watch("/w", token: "w") }
        #expect(try await iterator.next()?.path == "/w")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<16 {
                group.addTask {
                    try await client.immediate { h throws(XenStoreError) in
                        try await h.write("/w/\(index)", "x\(index)")
                    }
                    let value = try await client.immediate { h throws(XenStoreError) in
                        try await h.read("/w/\(index)")
                    }
                    #expect(value == "x\(index)")
                }
            }
            try await group.waitForAll()
        }
        var seen: Set<String> = []
        while seen.count < 16, let event = try await iterator.next() { seen.insert(event.path) }
        #expect(seen == Set((0..<16).map { "/w/\($0)" }))
        #expect(kernel.aliased == 0)
        #expect(kernel.maxQueued == 1)
        await client.close()
        await kernel.waitUntilClosed()
    }
}
