import Synchronization
import XenStoreProtocol

@testable import XenStoreClient

/// Wraps a transport and watches the client's side of the conversation: which packets it sent (by type) and
/// how many watches it holds on the server at any moment (WATCH minus UNWATCH, by path and token), so that
/// tests can check watch hygiene and `TRANSACTION_END F` whatever server sits behind.
final class CountingTransport: PushingTransport {
    private struct State {
        var parser = XenStorePacketParser()
        var sent: [XenStorePacket] = []
        var watches: Set<[String]> = []
        var maximumWatches = 0
    }

    let inner: any XenStoreTransport
    private let state = Mutex(State())

    init(_ inner: any XenStoreTransport) {
        self.inner = inner
    }

    func write(_ bytes: [UInt8]) async throws {
        state.withLock { state in
            state.parser.append(bytes)
            while let packet = try? state.parser.next() {
                state.sent.append(packet)
                let strings = payloadStrings(packet.payload)
                if packet.type == .watch, strings.count >= 2 {
                    state.watches.insert(Array(strings.prefix(2)))
                    state.maximumWatches = max(state.maximumWatches, state.watches.count)
                } else if packet.type == .unwatch, strings.count >= 2 {
                    state.watches.remove(Array(strings.prefix(2)))
                } else if packet.type == .resetWatches {
                    state.watches.removeAll()
                }
            }
        }
        try await inner.write(bytes)
    }

    func read() async throws -> [UInt8]? { try await inner.read() }

    func close() async { await inner.close() }

    /// Socket transports deliver on their I/O thread; the wrapper keeps that (it only watches writes).
    func startPushing(_ pusher: DescriptorStream.Pusher) -> Bool {
        (inner as? any PushingTransport)?.startPushing(pusher) ?? false
    }

    var ioExecutor: (any TaskExecutor)? { (inner as? any PushingTransport)?.ioExecutor }

    /// Watches the client currently holds.
    var watchCount: Int { state.withLock { $0.watches.count } }
    /// The most it ever held at once.
    var maximumWatchCount: Int { state.withLock { $0.maximumWatches } }
    /// Every packet sent, in order.
    var sent: [XenStorePacket] { state.withLock { $0.sent } }
    /// Forgets the high-water mark.
    func resetMaximum() { state.withLock { $0.maximumWatches = $0.watches.count } }
}
