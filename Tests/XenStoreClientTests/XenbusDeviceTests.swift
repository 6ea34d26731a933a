import Glibc
import Testing
import XenStoreProtocol

@testable import XenStoreClient

/// The xenbus device transport against a stand-in device: one end of a `SOCK_SEQPACKET` socket pair, so each
/// `write(2)` the transport makes arrives as one message, as the kernel device sees it.
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
        var requests: [XenStorePacket] = []
        for _ in 0..<3 {
            let message = await nextMessage(device)
            var parser = XenStorePacketParser()
            parser.append(message)
            let packet = try #require(try parser.next())
            #expect(parser.bufferedByteCount == 0, "exactly one packet per write")
            requests.append(packet)
        }
        for request in requests {
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
}
