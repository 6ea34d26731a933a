import Synchronization
import XenStoreClient
import XenStoreProtocol

/// A fake xenstore server the test drives by hand: it parses what the client writes into packets the test
/// takes with `nextRequest()`, and sends the client whatever bytes the test chooses (well-formed replies,
/// garbage, oversize headers, unknown req_ids), or hangs up.
final class ScriptedTransport: XenStoreTransport {
    private struct State {
        var parser = XenStorePacketParser()
        var requests: [XenStorePacket] = []
        var requestWaiters: [CheckedContinuation<XenStorePacket?, Never>] = []
        var outgoing: [[UInt8]] = []
        var reader: CheckedContinuation<[UInt8]?, Never>?
        var hungUp = false
        var closed = false
        var writes = 0
    }

    private let state = Mutex(State())

    // MARK: - XenStoreTransport (the client's side)

    func write(_ bytes: [UInt8]) async throws {
        let waiters = try state.withLock { state -> [(CheckedContinuation<XenStorePacket?, Never>, XenStorePacket)] in
            if state.closed || state.hungUp { throw ScriptedError.closed }
            state.writes += 1
            state.parser.append(bytes)
            while let packet = try state.parser.next() { state.requests.append(packet) }
            var ready: [(CheckedContinuation<XenStorePacket?, Never>, XenStorePacket)] = []
            while !state.requestWaiters.isEmpty && !state.requests.isEmpty {
                ready.append((state.requestWaiters.removeFirst(), state.requests.removeFirst()))
            }
            return ready
        }
        for (waiter, packet) in waiters { waiter.resume(returning: packet) }
    }

    func read() async throws -> [UInt8]? {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> [UInt8]?? in
                if !state.outgoing.isEmpty { return .some(state.outgoing.removeFirst()) }
                if state.hungUp || state.closed { return .some(nil) }
                state.reader = continuation
                return .none
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    func close() async {
        let (reader, waiters) = state.withLock { state in
            state.closed = true
            defer {
                state.reader = nil
                state.requestWaiters = []
            }
            return (state.reader, state.requestWaiters)
        }
        reader?.resume(returning: nil)
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    // MARK: - The test's side

    /// The next packet the client wrote (waits for it); nil once the transport is closed.
    func nextRequest() async -> XenStorePacket? {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> XenStorePacket?? in
                if !state.requests.isEmpty { return .some(state.requests.removeFirst()) }
                if state.closed { return .some(nil) }
                state.requestWaiters.append(continuation)
                return .none
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// Sends raw bytes to the client.
    func send(_ bytes: [UInt8]) {
        let reader = state.withLock { state -> CheckedContinuation<[UInt8]?, Never>? in
            if let reader = state.reader {
                state.reader = nil
                return reader
            }
            state.outgoing.append(bytes)
            return nil
        }
        reader?.resume(returning: bytes)
    }

    /// Sends a packet.
    func send(_ packet: XenStorePacket) { send(packet.bytes) }

    /// Replies to `request` with its own type (or `type`) and `payload`.
    func reply(
        to request: XenStorePacket, type: XenStoreMessageType? = nil, requestID: UInt32? = nil, _ payload: [UInt8]
    ) {
        send(
            XenStorePacket(
                type: type ?? request.type, requestID: requestID ?? request.requestID,
                transactionID: request.transactionID, payload: payload))
    }

    /// Replies `OK`.
    func ok(_ request: XenStorePacket) { reply(to: request, Array("OK".utf8) + [0]) }

    /// Replies with an error name.
    func error(_ request: XenStorePacket, _ name: String) {
        reply(to: request, type: .error, Array(name.utf8) + [0])
    }

    /// The server closes the connection: the client's read returns nil, its writes fail.
    func hangUp() {
        let reader = state.withLock { state -> CheckedContinuation<[UInt8]?, Never>? in
            state.hungUp = true
            defer { state.reader = nil }
            return state.reader
        }
        reader?.resume(returning: nil)
    }

    /// How many `write` calls the client made.
    var writeCount: Int { state.withLock { $0.writes } }

    enum ScriptedError: Error { case closed }
}

/// `strings` NUL-terminated.
func nulStrings(_ strings: String...) -> [UInt8] {
    strings.flatMap { Array($0.utf8) + [0] }
}

/// The NUL-separated strings of a payload.
func payloadStrings(_ payload: [UInt8]) -> [String] {
    var body = payload[...]
    if body.last == 0 { body = body.dropLast() }
    return body.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
}
