import Glibc
import Logging
import Synchronization
import XenStoreProtocol

// The IO half of the multiplexer: admits requests into `MultiplexerState`, writes batches, runs the one
// reader task, and turns what the state machine returns into resumed continuations and delivered events.
extension XenStoreClient {
    // MARK: - Requests

    /// Sends one request and returns the reply payload, mapping `XS_ERROR` replies and replies of the wrong
    /// type to typed errors carrying `path` and `op`.
    func call(
        _ op: XenStoreMessageType, transaction: UInt32, path: String, payload: [UInt8], bypassGate: Bool = false
    ) async throws(XenStoreError) -> [UInt8] {
        guard payload.count <= XenStoreLimits.payloadMax else {
            throw .requestTooLarge(path: path, op: op, length: payload.count)
        }
        let packet = try await perform(op, transaction: transaction, payload: payload, bypassGate: bypassGate).get()
        if packet.type == .error {
            throw XenStoreError(name: WirePayload.strings(packet.payload).first ?? "", path: path, op: op)
        }
        guard packet.type == op else { throw .unexpectedReply(path: path, op: op, received: packet.type) }
        return packet.payload
    }

    /// Admits the request (parking at the gate while suspended), writes the outbox if no other task is
    /// writing it, then waits for the reply.
    func perform(
        _ op: XenStoreMessageType, transaction: UInt32, payload: [UInt8], bypassGate: Bool
    ) async -> Result<XenStorePacket, XenStoreError> {
        while true {
            let admission = state.withLock { state in
                defer { inFlight.update(state) }
                return state.admit(op, transaction: transaction, payload: payload, bypassGate: bypassGate)
            }
            switch admission {
            case .fail(let error):
                return .failure(error)
            case .park:
                let proceed = await withUnsafeContinuation { (continuation: GateContinuation) in
                    let now = state.withLock { state -> Bool? in
                        switch state.phase {
                        case .suspending, .suspended:
                            state.gate.append(continuation)
                            return nil
                        case .resuming where !bypassGate:
                            state.gate.append(continuation)
                            return nil
                        case .closed: return false
                        case .running, .resuming: return true
                        }
                    }
                    if let now { continuation.resume(returning: now) }
                }
                if !proceed { return .failure(.disconnected) }
            case .queued(let id, let flush, let connection):
                let since = inFlight.deliveries.load(ordering: .acquiring)
                if flush { await self.flush(connection) }
                let waited = inFlight.awaitLoneReply(since: since)
                let reply = await withUnsafeContinuation { (continuation: ReplyContinuation) in
                    let (now, drained) = state.withLock { state in
                        defer { inFlight.update(state) }
                        return state.startWaiting(id, continuation: continuation)
                    }
                    for waiter in drained { waiter.resume() }
                    if let now {
                        inFlight.waking(1)
                        continuation.resume(returning: now)
                    }
                }
                inFlight.ran()
                if waited && inFlight.yieldDue() { await Task.yield() }
                return reply
            }
        }
    }

    /// Writes the outbox until it is empty. Only one task holds the writer role at a time; requests admitted
    /// meanwhile ride along in the next batch. After a few batches the role moves to a fresh task so that
    /// one requester is not kept writing for everybody else forever.
    func flush(_ connection: UInt64) async {
        let current = transport.withLock { $0 }
        guard current.connection == connection else { return }
        // With other requests in flight, let the tasks that are ready right now (typically the ones just woken
        // by a batch of replies) add their requests first, so that they leave in one write instead of one
        // write each. A lone request goes out at once: yielding would only add latency.
        if state.withLock({ $0.pending.count > 1 }) { await Task.yield() }
        for _ in 0..<8 {
            guard let batch = state.withLock({ $0.takeOutbox(for: connection) }) else { return }
            do {
                try await current.transport.write(batch)
            } catch {
                connectionLost(connection, error: .disconnected)
                return
            }
        }
        Task { await self.flush(connection) }
    }

    // MARK: - Reading

    /// Starts reading `transport`: transports with an I/O thread of their own (sockets, the xenbus device)
    /// hand bytes straight to a `PushReceiver` there; others get the one reader task. Both hold the client
    /// weakly: a client nobody references is released (its deinit closes the transport, which ends them).
    func startReader(_ transport: any XenStoreTransport, connection: UInt64) {
        inFlight.readerThread.store(0, ordering: .relaxed)
        if let pushing = transport as? any PushingTransport {
            let receiver = PushReceiver(client: self, connection: connection)
            let gauge = inFlight
            let pusher: DescriptorStream.Pusher = (
                receive: receiver.receive, end: receiver.end,
                spin: { gauge.wantsSpin }
            )
            if pushing.startPushing(pusher) { return }
        }
        Task.detached { [weak self] in
            var parser = XenStorePacketParser()
            var packets: [XenStorePacket] = []
            while true {
                let chunk: [UInt8]?
                do { chunk = try await transport.read() } catch { chunk = nil }
                guard let self else {
                    await transport.close()
                    return
                }
                guard let chunk else {
                    self.connectionLost(connection, error: .disconnected)
                    return
                }
                parser.append(chunk)
                packets.removeAll(keepingCapacity: true)
                var failure: XenStoreProtocolError?
                do throws(XenStoreProtocolError) {
                    while let packet = try parser.next() { packets.append(packet) }
                } catch {
                    failure = error
                }
                if !packets.isEmpty { self.deliver(packets, connection: connection) }
                if let failure {
                    self.logger.error("xenstore stream broken, dropping the connection: \(failure)")
                    self.connectionLost(connection, error: .protocolViolation(failure))
                    await transport.close()
                    return
                }
            }
        }
    }

    /// Closes the transport of `connection` if it is still the current one (after framing was lost).
    func closeTransport(of connection: UInt64) {
        let current = transport.withLock { $0 }
        guard current.connection == connection else { return }
        Task { await current.transport.close() }
    }

    func deliver(_ packets: [XenStorePacket], connection: UInt64) {
        var out = MultiplexerState.Dispatch()
        state.withLock { state in
            inFlight.dispatching(pending: state.pending.count)
            state.dispatch(packets, connection: connection, into: &out)
            inFlight.update(state)
        }
        inFlight.deliveries.add(1, ordering: .releasing)
        act(on: out)
    }

    /// Acts on a dispatch result outside the lock.
    func act(on out: MultiplexerState.Dispatch) {
        inFlight.waking(out.replies.count)
        for (continuation, result) in out.replies { continuation.resume(returning: result) }
        for (sink, event) in out.events { sink.deliver(event) }
        for waiter in out.drained { waiter.resume() }
        for (id, type) in out.unknown {
            logger.warning("xenstore: dropping a \(type) reply with unknown req_id \(id)")
        }
        if out.droppedEvents > 0 {
            logger.debug("xenstore: dropped \(out.droppedEvents) watch event(s) for unknown tokens")
        }
    }

    /// The connection failed: everything in flight fails with `error`, every watch with `.disconnected`.
    func connectionLost(_ connection: UInt64, error: XenStoreError) {
        let (out, sinks) = state.withLock { state -> (MultiplexerState.Dispatch?, [any WatchSink]) in
            defer { inFlight.update(state) }
            guard let out = state.connectionLost(connection, error: error) else { return (nil, []) }
            return (out, state.takeRoutes(all: true))
        }
        guard let out else { return }
        act(on: out)
        for sink in sinks { sink.finish(.disconnected) }
    }

    // MARK: - Watches

    /// Registers a watch (internal or manual) and waits for the acknowledgement.
    func sendWatch(_ path: String, token: String, transaction: UInt32 = 0) async throws(XenStoreError) {
        let payload = try WirePayload.checkedStrings([path, token], path: path, op: .watch)
        _ = try await call(.watch, transaction: transaction, path: path, payload: payload)
    }

    /// Removes a watch and waits for the acknowledgement.
    func sendUnwatch(_ path: String, token: String, transaction: UInt32 = 0) async throws(XenStoreError) {
        let payload = try WirePayload.checkedStrings([path, token], path: path, op: .unwatch)
        _ = try await call(.unwatch, transaction: transaction, path: path, payload: payload)
    }

    // MARK: - Suspend, resume, close

    /// Suspends the client: waits for the requests in flight to complete, cancels the watches of `wait` and
    /// `watches` (they throw `.suspended`), and parks new requests until `resume`. Manual watches are kept
    /// and re-registered by `resume`.
    ///
    /// OCaml: `Xs_client_lwt.S.suspend`
    public func suspend() async {
        let mustDrain = state.withLock { state -> Bool in
            switch state.phase {
            case .running: state.phase = .suspending
            case .suspending: break
            case .suspended, .resuming, .closed: return false
            }
            return !state.pending.isEmpty
        }
        if mustDrain {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.pending.isEmpty || state.phase != .suspending { return true }
                    state.drainWaiters.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        }
        let sinks = state.withLock { state -> [any WatchSink] in
            guard state.phase == .suspending else { return [] }
            state.phase = .suspended
            return state.takeRoutes(all: false)
        }
        for sink in sinks { sink.finish(.suspended) }
    }

    /// Resumes a suspended client: reconnects (through the opener of `make`/`connect`; a client built over
    /// a bare transport keeps its connection and clears its watches with `RESET_WATCHES`), re-registers the
    /// manual watches (OCaml does not), then releases the parked requests. Does nothing unless suspended.
    ///
    /// OCaml: `Xs_client_lwt.S.resume`
    public func resume() async throws(XenStoreError) {
        try await resume(replacing: nil)
    }

    /// Resumes a suspended client over `transport` (the old connection is closed), re-registers the manual
    /// watches and releases the parked requests.
    ///
    /// OCaml: `Xs_client_lwt.S.resume` (with the new `IO` channel)
    public func resume(transport: any XenStoreTransport) async throws(XenStoreError) {
        try await resume(replacing: transport)
    }

    private func resume(replacing newTransport: (any XenStoreTransport)?) async throws(XenStoreError) {
        let proceed = state.withLock { state -> Bool in
            guard state.phase == .suspended else { return false }
            state.phase = .resuming
            return true
        }
        guard proceed else { return }
        var fresh = newTransport
        if fresh == nil, let reconnect {
            do throws(XenStoreError) {
                fresh = try await reconnect()
            } catch {
                state.withLock { $0.phase = .suspended }
                throw error
            }
        }
        if let fresh {
            let (old, connection) = state.withLock { state -> (UInt64, UInt64) in
                let old = state.connection
                state.connection += 1
                state.alive = true
                state.outbox = []
                state.writing = false
                return (old, state.connection)
            }
            let previous = transport.withLock { box -> any XenStoreTransport in
                defer { box = (connection, fresh) }
                return box.transport
            }
            _ = old
            await previous.close()
            startReader(fresh, connection: connection)
        } else {
            guard state.withLock({ $0.alive }) else {
                state.withLock { $0.phase = .suspended }
                throw .disconnected
            }
            // Same connection: the server still holds the cancelled watches; start from a clean slate.
            if case .failure(let error) = await perform(
                .resetWatches, transaction: 0, payload: [0], bypassGate: true)
            {
                logger.warning("xenstore resume: RESET_WATCHES failed: \(error)")
            }
        }
        let manual = state.withLock { $0.manualWatches }
        for watch in manual {
            do throws(XenStoreError) {
                try await sendWatch(watch.path, token: watch.token, transaction: 0, bypassGate: true)
            } catch {
                logger.warning("xenstore resume: re-registering watch \(watch.path) \(watch.token): \(error)")
            }
        }
        let gate = state.withLock { state -> [GateContinuation] in
            if state.phase == .resuming { state.phase = .running }
            defer { state.gate = [] }
            return state.gate
        }
        for continuation in gate { continuation.resume(returning: true) }
    }

    private func sendWatch(
        _ path: String, token: String, transaction: UInt32, bypassGate: Bool
    ) async throws(XenStoreError) {
        let payload = try WirePayload.checkedStrings([path, token], path: path, op: .watch)
        _ = try await call(.watch, transaction: transaction, path: path, payload: payload, bypassGate: bypassGate)
    }

    /// Closes the connection: requests in flight and parked ones fail with `.disconnected`, watch sequences
    /// and waits end with `.disconnected`, later requests fail at once.
    ///
    /// OCaml: none (`Xs_client_lwt` clients live forever)
    public func close() async {
        let (out, sinks, gate) = state.withLock {
            state -> (MultiplexerState.Dispatch, [any WatchSink], [GateContinuation]) in
            defer { inFlight.update(state) }
            state.phase = .closed
            state.alive = false
            var out = MultiplexerState.Dispatch()
            state.failAllPending(.disconnected, into: &out)
            out.drained += state.drainWaiters
            state.drainWaiters = []
            state.outbox = []
            let gate = state.gate
            state.gate = []
            return (out, state.takeRoutes(all: true), gate)
        }
        act(on: out)
        for sink in sinks { sink.finish(.disconnected) }
        for continuation in gate { continuation.resume(returning: false) }
        await transport.withLock { $0.transport }.close()
    }
}

/// Parses bytes pushed by a transport's I/O thread and dispatches them there, without a reader task.
final class PushReceiver: Sendable {
    private weak let client: XenStoreClient?
    private let connection: UInt64
    private let parser = Mutex(XenStorePacketParser())

    init(client: XenStoreClient, connection: UInt64) {
        self.client = client
        self.connection = connection
    }

    @Sendable func receive(_ bytes: [UInt8]) {
        guard let client else { return }
        client.inFlight.readerThread.store(UInt(pthread_self()), ordering: .relaxed)
        let (packets, failure) = parser.withLock { parser -> ([XenStorePacket], XenStoreProtocolError?) in
            parser.append(bytes)
            var packets: [XenStorePacket] = []
            do throws(XenStoreProtocolError) {
                while let packet = try parser.next() { packets.append(packet) }
            } catch {
                return (packets, error)
            }
            return (packets, nil)
        }
        if !packets.isEmpty { client.deliver(packets, connection: connection) }
        if let failure {
            client.logger.error("xenstore stream broken, dropping the connection: \(failure)")
            client.connectionLost(connection, error: .protocolViolation(failure))
            client.closeTransport(of: connection)
        }
    }

    @Sendable func end(_ error: DescriptorError?) {
        client?.connectionLost(connection, error: .disconnected)
    }
}

extension WirePayload {
    /// `encode(strings)`, refusing strings with a NUL (the wire separator).
    static func checkedStrings(
        _ strings: [String], path: String, op: XenStoreMessageType
    ) throws(XenStoreError) -> [UInt8] {
        // Each string ends with its NUL in the encoding: any other NUL came from inside one. One pass over
        // contiguous bytes instead of a search through every string's view.
        let bytes = encode(strings)
        let nuls = bytes.withUnsafeBufferPointer { buffer in buffer.reduce(0) { $0 + ($1 == 0 ? 1 : 0) } }
        guard nuls == strings.count else {
            throw .invalidArgument(path: path, op: op, reason: "argument contains a NUL byte")
        }
        return bytes
    }
}
