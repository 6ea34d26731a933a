import XenCore
import XenStoreProtocol
import XenStoreServer

/// A tiny wire client for the server tests (XenStoreClient is another component): sends one request at a
/// time over any transport, collects watch events on the side.
final class TestClient {
    let transport: any XenStoreTransport
    private var parser = XenStorePacketParser()
    private var nextRequestID: UInt32 = 1
    /// Watch events received so far, oldest first.
    var events: [XenStoreReply] = []

    init(_ transport: any XenStoreTransport) { self.transport = transport }

    /// Sends `request` and waits for the reply with the same request id.
    func call(_ request: XenStoreRequest, transaction: UInt32 = 0) async throws -> XenStoreReply {
        // The transaction id goes in the header as given, even for types that ignore it.
        try await callRaw(
            XenStorePacket(
                type: request.type, requestID: nextID(), transactionID: transaction, payload: request.payload))
    }

    /// Sends any packet and waits for the reply echoing its request id.
    func callRaw(_ packet: XenStorePacket) async throws -> XenStoreReply {
        try await transport.write(packet.bytes)
        return try await reply(to: packet.requestID)
    }

    func reply(to requestID: UInt32) async throws -> XenStoreReply {
        while true {
            while let packet = try parser.next() {
                let reply = try XenStoreReply(decoding: packet)
                if case .watchEvent = reply {
                    events.append(reply)
                } else if packet.requestID == requestID {
                    return reply
                }
            }
            guard let bytes = try await transport.read() else { throw TestClientError.closed }
            parser.append(bytes)
        }
    }

    /// Events received up to now, after a round trip that flushes anything queued before it.
    func drainEvents() async throws -> [XenStoreReply] {
        _ = try await call(.getDomainPath(domain: 0))
        defer { events.removeAll() }
        return events
    }

    private func nextID() -> UInt32 {
        defer { nextRequestID &+= 1 }
        return nextRequestID
    }
}

enum TestClientError: Error { case closed }
