import XenStoreProtocol

/// The continuation a request waits on; resumed exactly once, outside the lock.
typealias ReplyContinuation = UnsafeContinuation<Result<XenStorePacket, XenStoreError>, Never>

/// The continuation a request parked by `suspend` waits on: true = go on, false = the client closed.
typealias GateContinuation = UnsafeContinuation<Bool, Never>

/// The multiplexer's whole mutable state as a pure state machine: no IO, no locking, no continuation is
/// resumed here. `XenStoreClient` keeps it in a `Mutex`, calls one mutating method per event (a request
/// admitted, bytes parsed, the connection lost, suspend, resume) and acts on what the method returns
/// (continuations to resume, events to deliver, bytes to write) after unlocking.
///
/// OCaml: the fields of `Xs_client_lwt.client` (`rid_to_wakeup`, `watchevents`, `suspended`)
struct MultiplexerState {
    enum Phase: Equatable {
        /// Requests flow.
        case running
        /// `suspend` waits for requests in flight; new ones park at the gate.
        case suspending
        /// Suspended: new requests park at the gate.
        case suspended
        /// `resume` re-registers watches (its own requests pass the gate); others still park.
        case resuming
        /// `close` was called: everything fails with `.disconnected`.
        case closed
    }

    /// Where a reply goes.
    enum Waiter {
        /// The requester has not started waiting yet (it may still be writing the batch).
        case notYet
        case waiting(ReplyContinuation)
        /// The reply (or failure) arrived before the requester waited.
        case done(Result<XenStorePacket, XenStoreError>)
    }

    struct Pending {
        var op: XenStoreMessageType
        var waiter: Waiter
    }

    struct Route {
        var sink: any WatchSink
        /// Manual-watch subscriptions (`events(token:)`) survive suspend; `wait`/`watches` routes do not.
        var survivesSuspend: Bool
    }

    /// A manual watch registered through a handle, re-registered by `resume`.
    struct ManualWatch: Hashable {
        var path: String
        var token: String
    }

    var phase: Phase = .running
    /// False once the current connection failed; requests then fail at once with `.disconnected`.
    var alive = true
    /// Bumped whenever the transport is replaced, so that a stale reader or writer cannot touch the new one.
    var connection: UInt64 = 0
    var nextRequestID: UInt32 = 1
    var pending: [UInt32: Pending] = [:]
    /// WATCH/UNWATCH requests in flight in send order: older xenbus devices acknowledge them with req_id 0.
    var zeroAckCandidates: [UInt32] = []
    var outbox: [UInt8] = []
    var writing = false
    var gate: [GateContinuation] = []
    var drainWaiters: [UnsafeContinuation<Void, Never>] = []
    var routes: [String: [Route]] = [:]
    var manualWatches: [ManualWatch] = []
    var tokenCounter: UInt64 = 0

    // MARK: - Requests

    enum Admission {
        /// Queued in the outbox; `flush` = this requester must write the outbox (nobody else is).
        case queued(id: UInt32, flush: Bool, connection: UInt64)
        case park
        case fail(XenStoreError)
    }

    /// Admits a request: allocates a req_id (never 0, never one in flight), records it as pending and appends
    /// header and payload to the outbox. `internal` requests (resume's own) pass the gate while resuming.
    mutating func admit(
        _ op: XenStoreMessageType, transaction: UInt32, payload: [UInt8], bypassGate: Bool = false
    ) -> Admission {
        switch phase {
        case .closed: return .fail(.disconnected)
        case .suspending, .suspended: return .park
        case .resuming: if !bypassGate { return .park }
        case .running: break
        }
        guard alive else { return .fail(.disconnected) }
        var id = nextRequestID
        while id == 0 || pending[id] != nil { id &+= 1 }
        nextRequestID = id &+ 1
        pending[id] = Pending(op: op, waiter: .notYet)
        if op == .watch || op == .unwatch { zeroAckCandidates.append(id) }
        Self.appendHeader(into: &outbox, op.rawValue, id, transaction, UInt32(truncatingIfNeeded: payload.count))
        outbox.append(contentsOf: payload)
        let flush = !writing
        writing = true
        return .queued(id: id, flush: flush, connection: connection)
    }

    private static func appendHeader(into buffer: inout [UInt8], _ a: UInt32, _ b: UInt32, _ c: UInt32, _ d: UInt32) {
        // Written out rather than through XenStoreHeader.encode: this runs once per request under the lock.
        buffer.append(UInt8(truncatingIfNeeded: a))
        buffer.append(UInt8(truncatingIfNeeded: a >> 8))
        buffer.append(UInt8(truncatingIfNeeded: a >> 16))
        buffer.append(UInt8(truncatingIfNeeded: a >> 24))
        buffer.append(UInt8(truncatingIfNeeded: b))
        buffer.append(UInt8(truncatingIfNeeded: b >> 8))
        buffer.append(UInt8(truncatingIfNeeded: b >> 16))
        buffer.append(UInt8(truncatingIfNeeded: b >> 24))
        buffer.append(UInt8(truncatingIfNeeded: c))
        buffer.append(UInt8(truncatingIfNeeded: c >> 8))
        buffer.append(UInt8(truncatingIfNeeded: c >> 16))
        buffer.append(UInt8(truncatingIfNeeded: c >> 24))
        buffer.append(UInt8(truncatingIfNeeded: d))
        buffer.append(UInt8(truncatingIfNeeded: d >> 8))
        buffer.append(UInt8(truncatingIfNeeded: d >> 16))
        buffer.append(UInt8(truncatingIfNeeded: d >> 24))
    }

    /// The next batch for the writer of `connection`, or nil when the outbox is empty (the writer role ends)
    /// or the connection was replaced.
    mutating func takeOutbox(for connection: UInt64) -> [UInt8]? {
        guard connection == self.connection else { return nil }
        guard !outbox.isEmpty else {
            writing = false
            return nil
        }
        let batch = outbox
        outbox = []
        outbox.reserveCapacity(min(batch.count, 1 << 16))
        return batch
    }

    /// The requester starts waiting: either its reply is already here (returned), or `continuation` is parked.
    mutating func startWaiting(
        _ id: UInt32, continuation: ReplyContinuation
    ) -> (Result<XenStorePacket, XenStoreError>?, drained: [UnsafeContinuation<Void, Never>]) {
        guard var entry = pending[id] else { return (.failure(.disconnected), []) }
        if case .done(let result) = entry.waiter {
            pending[id] = nil
            return (result, takeDrainWaitersIfIdle())
        }
        entry.waiter = .waiting(continuation)
        pending[id] = entry
        return (nil, [])
    }

    // MARK: - Receiving

    /// What to do after dispatching packets, outside the lock.
    struct Dispatch {
        var replies: [(ReplyContinuation, Result<XenStorePacket, XenStoreError>)] = []
        var events: [(any WatchSink, XenStoreWatchEvent)] = []
        var drained: [UnsafeContinuation<Void, Never>] = []
        /// Replies nobody asked for (req_id, type): logged and dropped.
        var unknown: [(UInt32, XenStoreMessageType)] = []
        /// Watch events that did not parse, or for tokens nobody listens to.
        var droppedEvents = 0
    }

    /// Routes packets received on `connection`: watch events by token, everything else by req_id.
    mutating func dispatch(_ packets: [XenStorePacket], connection: UInt64, into out: inout Dispatch) {
        guard connection == self.connection else { return }
        for packet in packets {
            if packet.type == .watchEvent {
                let strings = WirePayload.strings(packet.payload)
                guard strings.count >= 2, let routes = routes[strings[1]] else {
                    out.droppedEvents += 1
                    continue
                }
                let event = XenStoreWatchEvent(path: strings[0], token: strings[1])
                for route in routes { out.events.append((route.sink, event)) }
                continue
            }
            var id = packet.requestID
            if id == 0 && pending[0] == nil && (packet.type == .watch || packet.type == .unwatch),
                let match = zeroAckCandidates.first(where: { pending[$0]?.op == packet.type })
            {
                // An older Linux xenbus device acknowledges WATCH/UNWATCH itself, with req_id 0.
                id = match
            }
            guard var entry = pending[id] else {
                out.unknown.append((packet.requestID, packet.type))
                continue
            }
            if entry.op == .watch || entry.op == .unwatch {
                if let index = zeroAckCandidates.firstIndex(of: id) { zeroAckCandidates.remove(at: index) }
            }
            switch entry.waiter {
            case .notYet:
                entry.waiter = .done(.success(packet))
                pending[id] = entry
            case .waiting(let continuation):
                pending[id] = nil
                out.replies.append((continuation, .success(packet)))
            case .done:
                // A second reply to one request: the first one stands.
                out.unknown.append((packet.requestID, packet.type))
            }
        }
        out.drained += takeDrainWaitersIfIdle()
    }

    // MARK: - Failure

    /// The connection `connection` failed (end of stream, write error, framing lost): every request in flight
    /// fails with `error`, every watch sink is finished with `.disconnected`.
    mutating func connectionLost(_ connection: UInt64, error: XenStoreError) -> Dispatch? {
        guard connection == self.connection, alive else { return nil }
        alive = false
        var out = Dispatch()
        failAllPending(error, into: &out)
        outbox = []
        writing = false
        return out
    }

    /// Fails all requests in flight (`notYet` ones keep the failure until their requester picks it up).
    mutating func failAllPending(_ error: XenStoreError, into out: inout Dispatch) {
        for (id, entry) in pending {
            switch entry.waiter {
            case .waiting(let continuation):
                pending[id] = nil
                out.replies.append((continuation, .failure(error)))
            case .notYet:
                pending[id]?.waiter = .done(.failure(error))
            case .done:
                break
            }
        }
        zeroAckCandidates = []
        out.drained += takeDrainWaitersIfIdle()
    }

    /// Removes every route (all of them, or only those not surviving suspend) and returns the sinks.
    mutating func takeRoutes(all: Bool) -> [any WatchSink] {
        var sinks: [any WatchSink] = []
        for (token, list) in routes {
            let keep = all ? [] : list.filter(\.survivesSuspend)
            for route in list where all || !route.survivesSuspend { sinks.append(route.sink) }
            routes[token] = keep.isEmpty ? nil : keep
        }
        return sinks
    }

    mutating func takeDrainWaitersIfIdle() -> [UnsafeContinuation<Void, Never>] {
        guard pending.isEmpty, !drainWaiters.isEmpty else { return [] }
        defer { drainWaiters = [] }
        return drainWaiters
    }

    // MARK: - Watches

    /// A token no other watch of this client uses.
    mutating func makeToken(_ kind: String) -> String {
        tokenCounter += 1
        return "swiftxen-\(kind)-\(tokenCounter)"
    }

    mutating func addRoute(_ token: String, _ sink: any WatchSink, survivesSuspend: Bool) {
        routes[token, default: []].append(Route(sink: sink, survivesSuspend: survivesSuspend))
    }

    mutating func removeRoute(_ token: String, _ sink: any WatchSink) {
        guard var list = routes[token] else { return }
        list.removeAll { $0.sink === sink }
        routes[token] = list.isEmpty ? nil : list
    }
}

// MARK: - Payload helpers

/// NUL-separated payload strings (the shape of most xenstore payloads).
enum WirePayload {
    /// The strings of a payload: split at NULs, the final NUL optional. An empty payload has none.
    static func strings(_ payload: [UInt8]) -> [String] {
        guard !payload.isEmpty else { return [] }
        var body = payload[...]
        if body.last == 0 { body = body.dropLast() }
        return body.split(separator: 0, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
    }

    /// `strings` joined with NUL terminators after each: `a\0b\0`.
    static func encode(_ strings: [String]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(strings.reduce(0) { $0 + $1.utf8.count + 1 })
        for string in strings {
            bytes.append(contentsOf: string.utf8)
            bytes.append(0)
        }
        return bytes
    }
}
