import Synchronization
public import XenCore

/// One connected end of a console ring (backend or guest), driven by event-channel kicks.
///
/// Reading returns bytes the peer produced, waiting for a kick when the ring is empty; writing copies into
/// the ring, waiting for a kick while it is full. Nothing is buffered beyond the shared ring, so a slow
/// reader stalls the peer instead of losing bytes (back-pressure). Concurrent writers are served in FIFO
/// order, each one's bytes contiguous. A ring protocol violation disconnects this console only: every
/// waiter and later call gets ``ConsoleError/protocolViolation(_:)``.
///
/// A `Mutex` around the pure ``ConsoleRing``; continuations are resumed outside the lock.
///
/// OCaml: the `service_thread` of `Conback.Make` and `Console_xen.read`/`write`
public final class ConsoleConnection: Sendable {
    private struct State: Sendable {
        /// The ring, until the connection ends: then it is dropped, so that the connection holds no view of
        /// the shared page and its owner may unmap or unshare it.
        var ring: ConsoleRing?
        var failure: ConsoleError? {
            didSet { if failure != nil { ring = nil } }
        }
        /// The peer has gone (closed its end, or its domain died): what is left in the ring is still
        /// delivered, then reads end with `.closed`; writes fail at once.
        var peerGone = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        var writers = TurnQueue()
        var bytesRead: UInt64 = 0
        var bytesWritten: UInt64 = 0
    }

    private let state: Mutex<State>
    private let notifyPeer: @Sendable () -> Void
    /// The backend's byte counters (nil on the guest's end).
    private let metrics: ConsoleBackMetrics?
    /// Which end this is.
    public let side: ConsoleRingSide

    /// Wraps an attached ring. `notifyPeer` sends an event to the other side (never called under a lock);
    /// the owner calls ``kick()`` whenever an event arrives from it.
    ///
    /// OCaml: `Conback.Make.init` (after mapping and binding)
    public convenience init(ring: ConsoleRing, notifyPeer: @escaping @Sendable () -> Void) {
        self.init(ring: ring, metrics: nil, notifyPeer: notifyPeer)
    }

    /// A connection that also counts its bytes in `metrics` (``ConsoleBack``'s).
    init(ring: ConsoleRing, metrics: ConsoleBackMetrics?, notifyPeer: @escaping @Sendable () -> Void) {
        self.side = ring.side
        self.state = Mutex(State(ring: ring))
        self.notifyPeer = notifyPeer
        self.metrics = metrics
    }

    // MARK: - Events

    /// The peer signalled the event channel: wake every waiter to re-check the ring.
    ///
    /// OCaml: `Activations.after` returning
    public func kick() {
        let woken = state.withLock { state in
            let all = Array(state.waiters.values)
            state.waiters.removeAll()
            return all
        }
        for waiter in woken { waiter.resume() }
    }

    /// Ends the connection: pending and later reads and writes fail with `reason` (``ConsoleError/closed``
    /// for an orderly close). The first reason sticks.
    ///
    /// OCaml: `Console_xen.disconnect` / cancelling the `Conback` service thread
    public func close(reason: ConsoleError = .closed) {
        let woken = state.withLock { state in
            if state.failure == nil { state.failure = reason }
            let all = Array(state.waiters.values)
            state.waiters.removeAll()
            return all
        }
        for waiter in woken { waiter.resume() }
    }

    /// The peer has gone (frontend `Closed`, device removed, domain destroyed): bytes still in the ring are
    /// delivered to readers, then reads end with ``ConsoleError/closed``; writes fail with it at once.
    ///
    /// OCaml: none (Conback cancels its service thread and loses what is left in the ring)
    public func peerClosed() {
        let woken = state.withLock { state in
            state.peerGone = true
            let all = Array(state.waiters.values)
            state.waiters.removeAll()
            return all
        }
        for waiter in woken { waiter.resume() }
    }

    /// Whether the peer has gone (see ``peerClosed()``) or the connection ended.
    public var isPeerGone: Bool { state.withLock { $0.peerGone || $0.failure != nil } }

    /// The shared ring page while the connection is open (for inspection; the engine alone moves the
    /// indices); nil once it ended, when the connection has let go of the page.
    ///
    /// OCaml: none (`Conback.t` keeps the ring buffer)
    public var page: PageBuffer? { state.withLock { $0.ring?.page } }

    /// The ring's `connection` byte (``ConsoleRingLayout/connected`` once a backend services it), or
    /// ``ConsoleRingLayout/disconnected`` once the connection ended.
    ///
    /// OCaml: none (Xen 4.21 `xencons_interface.connection`)
    public var ringConnectionFlag: UInt8 {
        state.withLock { $0.ring?.connection ?? ConsoleRingLayout.disconnected }
    }

    /// Why the connection ended, or nil while it is open.
    public var failure: ConsoleError? { state.withLock { $0.failure } }

    /// Waits until the connection ends or the peer goes (``peerClosed()``) and returns why
    /// (``ConsoleError/closed`` for a departed peer, ``ConsoleError/cancelled`` if the task is cancelled).
    ///
    /// OCaml: none (Lwt code joins the service thread instead)
    public func closed() async -> ConsoleError {
        while true {
            let (failure, gone) = state.withLock { ($0.failure, $0.peerGone) }
            if let failure { return failure }
            if gone { return .closed }
            do {
                try await waitForKick { $0.failure != nil || $0.peerGone }
            } catch {
                return error
            }
        }
    }

    /// Bytes read from and written to the ring so far.
    ///
    /// OCaml: `Conback.stats` (`total_read`, `total_write`)
    public var statistics: (read: UInt64, written: UInt64) {
        state.withLock { ($0.bytesRead, $0.bytesWritten) }
    }

    // MARK: - Reading

    /// Waits for at least one byte from the peer and returns up to `maximum` bytes.
    /// Throws ``ConsoleError/closed`` once closed, or the protocol violation that closed it.
    ///
    /// OCaml: `Console_xen.read` / `Console_ring.Ring.Back.Reader.read` in `read_the_ring`
    public func read(maximum: Int = ConsoleRingLayout.outSize) async throws(ConsoleError) -> [UInt8] {
        precondition(maximum > 0, "read needs room for at least one byte")
        while true {
            let outcome = state.withLock { state -> Result<[UInt8], ConsoleError>? in
                if let failure = state.failure { return .failure(failure) }
                do throws(ConsoleRingError) {
                    let bytes = try state.ring!.read(maximum: maximum)
                    state.bytesRead &+= UInt64(bytes.count)
                    if bytes.isEmpty && state.peerGone {
                        state.failure = .closed
                        return .failure(.closed)
                    }
                    return bytes.isEmpty ? nil : .success(bytes)
                } catch {
                    state.failure = .protocolViolation(error)
                    return .failure(.protocolViolation(error))
                }
            }
            switch outcome {
            case .success(let bytes):
                metrics?.bytesReceived.increment(by: bytes.count)
                notifyPeer()  // slots freed: a guest blocked on a full ring may go on
                return bytes
            case .failure(let error):
                wakeAll()
                throw error
            case nil:
                try await waitForKick { state in
                    state.failure != nil || state.peerGone || ((try? state.ring?.readableCount()) ?? 1) > 0
                }
            }
        }
    }

    /// Copies whatever is waiting (possibly nothing) into `buffer` without suspending; for pollers.
    ///
    /// OCaml: `Console_ring.Ring.Back.Reader.read` + `advance`
    public func readNow(into buffer: UnsafeMutableRawBufferPointer) throws(ConsoleError) -> Int {
        let outcome = state.withLock { state -> Result<Int, ConsoleError> in
            if let failure = state.failure { return .failure(failure) }
            do throws(ConsoleRingError) {
                let count = try state.ring!.read(into: buffer)
                state.bytesRead &+= UInt64(count)
                if count == 0 && state.peerGone && buffer.count > 0 {
                    state.failure = .closed
                    return .failure(.closed)
                }
                return .success(count)
            } catch {
                state.failure = .protocolViolation(error)
                return .failure(.protocolViolation(error))
            }
        }
        switch outcome {
        case .success(let count):
            if count > 0 {
                metrics?.bytesReceived.increment(by: count)
                notifyPeer()
            }
            return count
        case .failure(let error):
            wakeAll()
            throw error
        }
    }

    // MARK: - Writing

    /// Writes all of `bytes`, waiting for the peer to make room as often as needed (never drops).
    ///
    /// OCaml: `Console_xen.write` / the `read_the_console` loop of `Conback`
    public func write(_ bytes: some Collection<UInt8>) async throws(ConsoleError) {
        let data = Array(bytes)
        let ticket = state.withLock { $0.writers.take() }
        defer { finishTurn(ticket) }
        // Wait for our turn so concurrent writers never interleave inside one write.
        while true {
            let ready = state.withLock { state -> Result<Bool, ConsoleError> in
                if let failure = state.failure { return .failure(failure) }
                if state.peerGone { return .failure(.closed) }
                return .success(state.writers.isServing(ticket))
            }
            switch ready {
            case .failure(let error): throw error
            case .success(true): break
            case .success(false):
                try await waitForKick { $0.failure != nil || $0.peerGone || $0.writers.isServing(ticket) }
                continue
            }
            break
        }
        var offset = 0
        while offset < data.count {
            let outcome = data.withUnsafeBytes { raw in
                let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
                return state.withLock { state -> Result<Int, ConsoleError> in
                    if let failure = state.failure { return .failure(failure) }
                    if state.peerGone { return .failure(.closed) }
                    do throws(ConsoleRingError) {
                        let count = try state.ring!.write(rest)
                        state.bytesWritten &+= UInt64(count)
                        return .success(count)
                    } catch {
                        state.failure = .protocolViolation(error)
                        return .failure(.protocolViolation(error))
                    }
                }
            }
            switch outcome {
            case .success(let count) where count > 0:
                offset += count
                metrics?.bytesSent.increment(by: count)
                notifyPeer()
            case .success:
                try await waitForKick { state in
                    state.failure != nil || state.peerGone || ((try? state.ring?.writableCount()) ?? 1) > 0
                }
            case .failure(let error):
                wakeAll()
                throw error
            }
        }
    }

    // MARK: - Waiting

    /// Suspends until a kick (or close), unless `ready` already holds. Honours cancellation.
    private func waitForKick(until ready: @escaping @Sendable (State) -> Bool) async throws(ConsoleError) {
        let id = state.withLock { state in
            defer { state.nextWaiter &+= 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state in
                    if ready(state) || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume()
        }
        if Task.isCancelled { throw .cancelled }
    }

    /// Passes the write turn on; a writer that gave up before its turn is skipped when the turn reaches it.
    private func finishTurn(_ ticket: UInt64) {
        _ = state.withLock { $0.writers.finish(ticket) }
        wakeAll()
    }

    private func wakeAll() {
        let woken = state.withLock { state in
            let all = Array(state.waiters.values)
            state.waiters.removeAll()
            return all
        }
        for waiter in woken { waiter.resume() }
    }
}

// MARK: - Byte stream

extension ConsoleConnection {
    /// The bytes the peer sends, as an async sequence of chunks. Ends normally when the console is closed,
    /// throws ``ConsoleError/protocolViolation(_:)`` when the peer broke the ring. Pull-driven: bytes stay
    /// in the ring until the consumer asks, so a slow consumer back-pressures the peer.
    ///
    /// OCaml: a loop over `Mirage_console.S.read`
    public var bytes: ConsoleByteStream { ConsoleByteStream(connection: self) }
}

/// An async sequence of byte chunks read from a console. See ``ConsoleConnection/bytes``.
///
/// OCaml: a loop over `Mirage_console.S.read` until `Eof`
public struct ConsoleByteStream: AsyncSequence, Sendable {
    /// Each element is a non-empty chunk of console bytes, in order.
    public typealias Element = [UInt8]
    let connection: ConsoleConnection

    /// The iterator: one `read` per element.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let connection: ConsoleConnection

        /// The next chunk, nil once the console is closed or the task cancelled.
        public mutating func next() async throws(ConsoleError) -> [UInt8]? {
            do {
                return try await connection.read()
            } catch {
                switch error {
                case .closed, .cancelled: return nil
                default: throw error
                }
            }
        }
    }

    /// OCaml: none (Swift iteration)
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(connection: connection) }
}
