import Synchronization
import XenStoreClient

/// A minimal in-process xenstored that speaks just enough of the wire protocol for the collector: it acks
/// WATCH/UNWATCH, fires the initial event a real xenstored sends on WATCH, and `releaseDomain()` fires
/// `@releaseDomain` to every watcher of it, as xenstored does when a domain is reaped. Anything else gets an
/// `ENOSYS` error reply.
final class ReleaseDomainXenstored: XenStoreTransport {
    private struct State {
        var parser = XenStorePacketParser()
        var outgoing: [[UInt8]] = []
        var reader: CheckedContinuation<[UInt8]?, Never>?
        var watches: [(path: String, token: String)] = []
        var closed = false
    }

    private let state = Mutex(State())

    /// Tokens currently watching `@releaseDomain`.
    var releaseWatchTokens: [String] {
        state.withLock { $0.watches.filter { $0.path == "@releaseDomain" }.map(\.token) }
    }

    /// Fires `@releaseDomain` to every watcher of it.
    func releaseDomain() {
        let tokens = releaseWatchTokens
        for token in tokens {
            send(XenStorePacket(type: .watchEvent, payload: Self.strings(["@releaseDomain", token])))
        }
    }

    // MARK: - XenStoreTransport

    func write(_ bytes: [UInt8]) async throws {
        let requests = try state.withLock { state -> [XenStorePacket] in
            state.parser.append(bytes)
            var packets: [XenStorePacket] = []
            while let packet = try state.parser.next() { packets.append(packet) }
            return packets
        }
        for request in requests { answer(request) }
    }

    func read() async throws -> [UInt8]? {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> [UInt8]?? in
                if !state.outgoing.isEmpty { return .some(state.outgoing.removeFirst()) }
                if state.closed { return .some(nil) }
                state.reader = continuation
                return .none
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    func close() async {
        let reader = state.withLock { state in
            state.closed = true
            defer { state.reader = nil }
            return state.reader
        }
        reader?.resume(returning: nil)
    }

    // MARK: - Helpers

    private func answer(_ request: XenStorePacket) {
        let parts = request.payload.split(separator: 0, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        func reply(_ type: XenStoreMessageType, _ payload: [UInt8]) {
            send(XenStorePacket(type: type, requestID: request.requestID, transactionID: 0, payload: payload))
        }
        switch request.type {
        case .watch where parts.count >= 2:
            state.withLock { $0.watches.append((parts[0], parts[1])) }
            reply(.watch, Self.strings(["OK"]))
            send(XenStorePacket(type: .watchEvent, payload: Self.strings([parts[0], parts[1]])))
        case .unwatch where parts.count >= 2:
            state.withLock { $0.watches.removeAll { $0.path == parts[0] && $0.token == parts[1] } }
            reply(.unwatch, Self.strings(["OK"]))
        default:
            reply(.error, Self.strings(["ENOSYS"]))
        }
    }

    private func send(_ packet: XenStorePacket) {
        let reader = state.withLock { state -> CheckedContinuation<[UInt8]?, Never>? in
            guard !state.closed else { return nil }
            if let reader = state.reader {
                state.reader = nil
                return reader
            }
            state.outgoing.append(packet.bytes)
            return nil
        }
        reader?.resume(returning: packet.bytes)
    }

    static func strings(_ parts: [String]) -> [UInt8] {
        parts.flatMap { Array($0.utf8) + [0] }
    }
}
