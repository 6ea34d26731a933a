import Synchronization
public import XenCore
public import XenStoreProtocol

/// Failures of the shared-page xenstore transport.
///
/// OCaml: `Xenstore_ring` has none (it trusts the indices); these follow xenstore-ring.txt's error codes.
public enum XenStoreRingError: Error, Equatable, Sendable {
    /// The peer left producer/consumer offsets more than a ring apart (xenstore-ring.txt error 2, RINGIDX).
    case inconsistentIndices(producer: UInt32, consumer: UInt32)
    /// The server reported an error in the connection error indicator and stopped serving the ring.
    case serverError(UInt32)
    /// `reconnect()` on a ring whose server did not advertise the reconnection feature.
    case reconnectionUnsupported
    /// The transport was closed, reconnected, or its event channel went away.
    case closed
}

/// The `struct xenstore_domain_interface` page (xs_wire.h; docs/misc/xenstore-ring.txt).
///
/// Not in OCaml as a type (`Xenstore_ring.Ring` hard-codes the same offsets).
public enum XenStoreRingLayout {
    /// Bytes in each of the two circular buffers (`XENSTORE_RING_SIZE`).
    public static let ringSize = 1024
    /// Guest → server bytes.
    public static let requestOffset = 0
    /// Server → guest bytes.
    public static let responseOffset = 1024
    /// `req_cons`, `req_prod`, `rsp_cons`, `rsp_prod`.
    public static let requestConsumer = 2048, requestProducer = 2052, responseConsumer = 2056, responseProducer = 2060
    /// `server_features`: bit 0 reconnection, bit 1 error indicator.
    public static let serverFeatures = 2064
    /// `connection`: 0 connected, 1 reconnect in progress.
    public static let connection = 2068
    /// `error`: 0 none, 1 communication, 2 ring indices, 3 protocol.
    public static let error = 2072
    /// `XENSTORE_SERVER_FEATURE_RECONNECTION`.
    public static let featureReconnection: UInt32 = 1
    /// `XENSTORE_SERVER_FEATURE_ERROR`.
    public static let featureError: UInt32 = 2
}

/// A xenstore byte stream over a domain's shared ring page and its event channel: the guest end (what a
/// domU kernel's xenbus driver does) or the server end (what xenstored does with a domain's page).
///
/// The event channel is reached through two closures, so this needs no Xen: `notify` signals the peer,
/// `waitForEvent` suspends until the next notification (false once the channel is gone). Indices are
/// free-running and never assumed to start at 0; the peer's indices are read once, validated, then used.
/// One internal task turns events into wake-ups for both the reading and the writing side (a coalesced
/// event must not be consumed by one side while the other sleeps). Writes are serialised in call order so
/// packets never interleave.
///
/// The server end advertises the reconnection and error features at creation; when the guest requests a
/// reconnect it empties both queues, sets the connection state back to 0, notifies, and ends this stream
/// (`read()` returns nil): the owner drops the connection's watches and transactions and serves the ring
/// anew with a fresh transport.
/// OCaml: `Xs_client_lwt.IO` over mirage-xen's `Xs.IO` (`Xenstore_ring.Ring.write`/`read`)
public final class XenStoreRingTransport: XenStoreTransport {
    /// Which end of the ring this transport is.
    ///
    /// Not in OCaml (mirage-xen only has the guest end; oxenstored the server end).
    public enum Role: Sendable {
        /// Writes requests, reads responses.
        case guest
        /// Reads requests, writes responses.
        case server
    }

    private struct State {
        var generation: UInt64 = 0
        var waiters: [UnsafeContinuation<Void, Never>] = []
        var closed = false
        /// Writers queued behind the one writing (FIFO).
        var writing = false
        var writeQueue: [UnsafeContinuation<Void, Never>] = []
    }

    /// The shared page.
    public let page: PageBuffer
    /// This end's role.
    public let role: Role
    private let notifyPeer: @Sendable () throws -> Void
    private let state = Mutex(State())
    private let pump = Mutex<Task<Void, Never>?>(nil)

    // Offsets of the queue this end writes, and of the one it reads.
    private let outData: Int, outConsumer: Int, outProducer: Int
    private let inData: Int, inConsumer: Int, inProducer: Int

    /// Creates a transport over `page` (at least 4096 bytes). The server end advertises its features.
    ///
    /// OCaml: `Xs.IO.create` (mirage-xen), without its zeroing of the page
    public init(
        page: PageBuffer, role: Role, notify: @escaping @Sendable () throws -> Void,
        waitForEvent: @escaping @Sendable () async -> Bool
    ) {
        precondition(page.count >= xenPageSize, "the xenstore ring needs a whole page")
        self.page = page
        self.role = role
        self.notifyPeer = notify
        typealias L = XenStoreRingLayout
        switch role {
        case .guest:
            (outData, outConsumer, outProducer) = (L.requestOffset, L.requestConsumer, L.requestProducer)
            (inData, inConsumer, inProducer) = (L.responseOffset, L.responseConsumer, L.responseProducer)
        case .server:
            (outData, outConsumer, outProducer) = (L.responseOffset, L.responseConsumer, L.responseProducer)
            (inData, inConsumer, inProducer) = (L.requestOffset, L.requestConsumer, L.requestProducer)
            let features = page.uint32(at: L.serverFeatures)
            page.setUInt32(features | L.featureReconnection | L.featureError, at: L.serverFeatures)
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
        let task = Task { [weak self] in
            while await waitForEvent() {
                guard let self else { return }
                self.wakeAll()
            }
            self?.finish()
        }
        pump.withLock { $0 = task }
    }

    deinit { pump.withLock { $0 }?.cancel() }

    /// Waits until the event pump has ended: `waitForEvent` returned false (the event channel went away). Join it
    /// before the ring page is unmapped, so that no task of the transport is running when its page goes.
    ///
    /// OCaml: none (Lwt threads are not joined)
    public func pumpEnded() async { await pump.withLock { $0 }?.value }

    // MARK: - Events

    private func wakeAll(closing: Bool = false) {
        let waiters = state.withLock { state in
            state.generation &+= 1
            if closing { state.closed = true }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func finish() { wakeAll(closing: true) }

    private var generation: (UInt64, Bool) { state.withLock { ($0.generation, $0.closed) } }

    /// Suspends until an event newer than `seen` arrived (or the transport closed).
    private func waitForEvent(after seen: UInt64) async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let ready = state.withLock { state in
                if state.generation != seen || state.closed { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func notify() throws(XenStoreRingError) {
        do { try notifyPeer() } catch { throw .closed }
    }

    // MARK: - Shared indices

    private func checkError() throws(XenStoreRingError) {
        let code = page.uint32(at: XenStoreRingLayout.error)
        if role == .guest, code != 0 { throw .serverError(code) }
    }

    /// Reads a queue's indices once and validates them.
    private func indices(consumer: Int, producer: Int) throws(XenStoreRingError) -> (UInt32, UInt32) {
        let cons = page.uint32(at: consumer)
        let prod = page.uint32(at: producer)
        atomicMemoryFence(ordering: .acquiring)
        guard prod &- cons <= UInt32(XenStoreRingLayout.ringSize) else {
            if role == .server {
                page.setUInt32(2, at: XenStoreRingLayout.error)
                finish()
            }
            throw .inconsistentIndices(producer: prod, consumer: cons)
        }
        return (cons, prod)
    }

    /// True (and the stream ended) when the guest asked for a reconnect and this server end performed it.
    private func serveReconnectRequest() throws(XenStoreRingError) -> Bool {
        guard role == .server, page.uint32(at: XenStoreRingLayout.connection) != 0 else { return false }
        typealias L = XenStoreRingLayout
        page.setUInt32(page.uint32(at: L.requestProducer), at: L.requestConsumer)
        page.setUInt32(page.uint32(at: L.responseConsumer), at: L.responseProducer)
        atomicMemoryFence(ordering: .releasing)
        page.setUInt32(0, at: L.connection)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        finish()
        try? notify()
        return true
    }

    // MARK: - XenStoreTransport

    /// Copies `bytes` into the outgoing queue as space frees up, notifying after every update.
    ///
    /// OCaml: `Xs.IO.write` (mirage-xen), `Xenstore_ring.Ring.write`
    public func write(_ bytes: [UInt8]) async throws(XenStoreRingError) {
        await acquireWriter()
        defer { releaseWriter() }
        var sent = 0
        while sent < bytes.count {
            let (seen, closed) = generation
            if closed { throw .closed }
            try checkError()
            let (cons, prod) = try indices(consumer: outConsumer, producer: outProducer)
            let space = XenStoreRingLayout.ringSize - Int(prod &- cons)
            if space == 0 {
                await waitForEvent(after: seen)
                continue
            }
            let chunk = min(space, bytes.count - sent)
            for index in 0..<chunk {
                let slot = Int((prod &+ UInt32(index)) % UInt32(XenStoreRingLayout.ringSize))
                page.setUInt8(bytes[sent + index], at: outData + slot)
            }
            atomicMemoryFence(ordering: .releasing)
            page.setUInt32(prod &+ UInt32(chunk), at: outProducer)
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            sent += chunk
            try notify()
        }
    }

    /// Waits for bytes in the incoming queue and returns all of them (at most a ring's worth).
    /// Nil once the transport is closed, its event channel ended, or (server end) the guest reconnected.
    ///
    /// OCaml: `Xs.IO.read` (mirage-xen), `Xenstore_ring.Ring.read`
    public func read() async throws(XenStoreRingError) -> [UInt8]? {
        while true {
            let (seen, closed) = generation
            if closed { return nil }
            if try serveReconnectRequest() { return nil }
            try checkError()
            let (cons, prod) = try indices(consumer: inConsumer, producer: inProducer)
            let available = Int(prod &- cons)
            if available == 0 {
                await waitForEvent(after: seen)
                continue
            }
            var bytes = [UInt8](repeating: 0, count: available)
            for index in 0..<available {
                let slot = Int((cons &+ UInt32(index)) % UInt32(XenStoreRingLayout.ringSize))
                bytes[index] = page.uint8(at: inData + slot)
            }
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            page.setUInt32(cons &+ UInt32(available), at: inConsumer)
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            try notify()
            return bytes
        }
    }

    /// Stops the transport: pending and later reads return nil, writes throw `.closed`.
    ///
    /// OCaml: `Xs_client_lwt.IO.destroy`
    public func close() async {
        pump.withLock { $0 }?.cancel()
        finish()
    }

    /// Guest end: asks the server to reset the ring (set `connection` to 1, notify, wait for 0), after which
    /// both queues are empty and no request, watch or transaction survives.
    ///
    /// Not in OCaml (mirage-xen zeroes the page instead, which xenstore-ring.txt forbids).
    public func reconnect() async throws(XenStoreRingError) {
        precondition(role == .guest, "only the guest requests a reconnect")
        typealias L = XenStoreRingLayout
        guard page.uint32(at: L.serverFeatures) & L.featureReconnection != 0 else { throw .reconnectionUnsupported }
        page.setUInt32(1, at: L.connection)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        try notify()
        while true {
            let (seen, closed) = generation
            if closed { throw .closed }
            if page.uint32(at: L.connection) == 0 { return }
            await waitForEvent(after: seen)
        }
    }

    // MARK: - Writer serialisation

    private func acquireWriter() async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let mine = state.withLock { state in
                if !state.writing {
                    state.writing = true
                    return true
                }
                state.writeQueue.append(continuation)
                return false
            }
            if mine { continuation.resume() }
        }
    }

    private func releaseWriter() {
        let next: UnsafeContinuation<Void, Never>? = state.withLock { state in
            if state.writeQueue.isEmpty {
                state.writing = false
                return nil
            }
            return state.writeQueue.removeFirst()
        }
        next?.resume()
    }
}
