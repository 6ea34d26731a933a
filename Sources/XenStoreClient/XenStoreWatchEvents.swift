import Synchronization

/// One watch firing: the path that changed (relative if the watch path was) and the watch's token.
///
/// OCaml: the `(path, token)` of an `Xs_protocol.Op.Watchevent` packet
public struct XenStoreWatchEvent: Hashable, Sendable, CustomStringConvertible {
    /// The node that changed, or the watched path itself for the initial firing and for removals above it.
    public var path: String
    /// The token given when the watch was registered.
    public var token: String

    /// An event. OCaml: none (a pair)
    public init(path: String, token: String) {
        self.path = path
        self.token = token
    }

    /// `path token`, as `xenstore-watch` prints it.
    public var description: String { "\(path) \(token)" }
}

/// Watch events in the order the server sent them, as an `AsyncSequence`. Iteration ends (returns nil) when
/// the iterating task is cancelled or `cancel()` is called, and throws `.disconnected` / `.suspended` when the
/// connection goes away or the client is suspended. Events are buffered without bound until consumed.
///
/// For `XenStoreClient.watches(_:)` the watch is removed from the server (`UNWATCH`) when the sequence ends:
/// on cancellation, on `cancel()`, or once the last copy of the sequence and its iterator is gone.
///
/// OCaml: none (`Xs_client_lwt` only offers `wait`; this is the stream its users keep rebuilding)
public struct XenStoreWatchEvents: AsyncSequence, Sendable {
    /// The elements.
    public typealias Element = XenStoreWatchEvent
    /// The typed failure.
    public typealias Failure = XenStoreError

    let owner: WatchSubscriptionOwner

    init(subscription: WatchSubscription) {
        self.owner = WatchSubscriptionOwner(subscription)
    }

    /// The token this sequence receives events for.
    public var token: String { owner.subscription.token }

    /// Ends the sequence (pending `next()` calls return nil) and removes its watch, if it owns one.
    ///
    /// OCaml: none
    public func cancel() { owner.subscription.cancel() }

    /// An iterator. Several iterators of one sequence share (split) its events.
    ///
    /// OCaml: none
    public func makeAsyncIterator() -> Iterator { Iterator(owner: owner) }

    /// Pulls events one by one.
    ///
    /// OCaml: none
    public struct Iterator: AsyncIteratorProtocol {
        let owner: WatchSubscriptionOwner
        var subscription: WatchSubscription { owner.subscription }

        /// The next event; nil once the sequence ended; throws when the connection was lost or suspended.
        ///
        /// OCaml: none (`Xs_client_lwt`'s `Watcher.get`)
        public mutating func next(
            isolation actor: isolated (any Actor)? = #isolation
        ) async throws(XenStoreError) -> XenStoreWatchEvent? {
            try await subscription.next()
        }

        /// The next event (the form without isolation, for older callers).
        public mutating func next() async throws(XenStoreError) -> XenStoreWatchEvent? {
            try await subscription.next()
        }
    }
}

// MARK: - Subscription (the buffer behind a watch sequence)

/// What the multiplexer hands watch events to. `finish` ends the sink because the connection went away or
/// the client was suspended; after that no event is delivered.
protocol WatchSink: AnyObject, Sendable {
    func deliver(_ event: XenStoreWatchEvent)
    func finish(_ error: XenStoreError)
}

/// Keeps a subscription alive for the public sequence and its iterators; when the last of them is gone the
/// subscription is cancelled (the route table holds the subscription itself, not this owner).
final class WatchSubscriptionOwner: Sendable {
    let subscription: WatchSubscription
    init(_ subscription: WatchSubscription) { self.subscription = subscription }
    deinit { subscription.cancel() }
}

/// An unbounded FIFO of events with at most one waiting reader. `onEnd` runs once when the consumer ends
/// the subscription (cancel, or the sequence dropped), never when the connection ends it.
final class WatchSubscription: WatchSink, Sendable {
    private struct State {
        var buffer: [XenStoreWatchEvent] = []
        var head = 0
        var waiter: UnsafeContinuation<Result<XenStoreWatchEvent?, XenStoreError>, Never>?
        var failure: XenStoreError?
        var cancelled = false
    }

    let token: String
    private let state = Mutex(State())
    private let onEnd: (@Sendable (WatchSubscription) -> Void)?

    init(token: String, onEnd: (@Sendable (WatchSubscription) -> Void)?) {
        self.token = token
        self.onEnd = onEnd
    }

    func deliver(_ event: XenStoreWatchEvent) {
        let waiter = state.withLock { state -> UnsafeContinuation<Result<XenStoreWatchEvent?, XenStoreError>, Never>? in
            guard !state.cancelled, state.failure == nil else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.buffer.append(event)
            return nil
        }
        waiter?.resume(returning: .success(event))
    }

    func finish(_ error: XenStoreError) {
        let waiter = state.withLock { state -> UnsafeContinuation<Result<XenStoreWatchEvent?, XenStoreError>, Never>? in
            guard !state.cancelled, state.failure == nil else { return nil }
            state.failure = error
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: .failure(error))
    }

    /// Ends the subscription from the consumer's side and runs `onEnd` (once).
    func cancel() {
        let (waiter, run) = state.withLock {
            state -> (UnsafeContinuation<Result<XenStoreWatchEvent?, XenStoreError>, Never>?, Bool) in
            guard !state.cancelled else { return (nil, false) }
            state.cancelled = true
            state.buffer.removeAll()
            state.head = 0
            defer { state.waiter = nil }
            return (state.waiter, state.failure == nil)
        }
        waiter?.resume(returning: .success(nil))
        if run { onEnd?(self) }
    }

    /// True once the connection (not the consumer) ended this subscription.
    var isFinishedByConnection: Bool { state.withLock { $0.failure != nil } }

    func next() async throws(XenStoreError) -> XenStoreWatchEvent? {
        enum Immediate {
            case value(XenStoreWatchEvent?)
            case failure(XenStoreError)
            case wait
        }
        let immediate = state.withLock { state -> Immediate in
            if state.head < state.buffer.count {
                let event = state.buffer[state.head]
                state.head += 1
                if state.head == state.buffer.count {
                    state.buffer.removeAll(keepingCapacity: true)
                    state.head = 0
                }
                return .value(event)
            }
            if state.cancelled { return .value(nil) }
            if let failure = state.failure { return .failure(failure) }
            return .wait
        }
        switch immediate {
        case .value(let event): return event
        case .failure(let error): throw error
        case .wait: break
        }
        let result = await withTaskCancellationHandler {
            await withUnsafeContinuation {
                (continuation: UnsafeContinuation<Result<XenStoreWatchEvent?, XenStoreError>, Never>) in
                let now = state.withLock { state -> Result<XenStoreWatchEvent?, XenStoreError>? in
                    if state.head < state.buffer.count {
                        let event = state.buffer[state.head]
                        state.head += 1
                        return .success(event)
                    }
                    if state.cancelled { return .success(nil) }
                    if let failure = state.failure { return .failure(failure) }
                    if Task.isCancelled { return .success(nil) }
                    // A second concurrent reader would overwrite the first; refuse it instead.
                    guard state.waiter == nil else { return .success(nil) }
                    state.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            cancel()
        }
        return try result.get()
    }
}
