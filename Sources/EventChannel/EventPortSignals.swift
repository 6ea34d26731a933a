import Synchronization
public import XenCore

/// Per-port pending bits and waiters: the part of an event-channel backend that turns "port fired" into
/// resumed tasks. Backends call ``open(_:)`` when binding, ``signal(_:)`` when an event arrives, and
/// ``close(_:)`` when unbinding.
///
/// A signal with a waiter resumes the oldest waiter; without one it sets the pending bit, and further signals
/// coalesce into that bit until a waiter consumes it: exactly one wake per burst, as Xen's pending bit.
/// Not in OCaml (mirage-xen's `Activations` keeps a per-port generation counter and condition instead).
public final class EventPortSignals: Sendable {
    private struct Slot {
        var pending = false
        var waiters: [(id: UInt64, continuation: UnsafeContinuation<Bool, Never>)] = []
    }

    private struct State {
        var slots: [UInt32: Slot] = [:]
        var nextWaiterID: UInt64 = 0
        var closed = false
    }

    private let state = Mutex(State())

    /// Creates an empty table (no port open).
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public init() {}

    /// Starts tracking `port` (not pending).
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func open(_ port: EventChannelPort) {
        state.withLock { state in
            guard !state.closed else { return }
            state.slots[port.rawValue] = Slot()
        }
    }

    /// Whether `port` is open.
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func isOpen(_ port: EventChannelPort) -> Bool { state.withLock { $0.slots[port.rawValue] != nil } }

    /// Whether an event on `port` is pending (arrived with nobody waiting, not yet consumed).
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func isPending(_ port: EventChannelPort) -> Bool {
        state.withLock { $0.slots[port.rawValue]?.pending ?? false }
    }

    /// The number of tasks waiting on `port`.
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func waitingCount(_ port: EventChannelPort) -> Int {
        state.withLock { $0.slots[port.rawValue]?.waiters.count ?? 0 }
    }

    /// An event arrived on `port`: wake one waiter, or set the pending bit. Ignored for ports not open.
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func signal(_ port: EventChannelPort) {
        let waiter: UnsafeContinuation<Bool, Never>? = state.withLock { state in
            guard var slot = state.slots[port.rawValue] else { return nil }
            if slot.waiters.isEmpty {
                slot.pending = true
                state.slots[port.rawValue] = slot
                return nil
            }
            let first = slot.waiters.removeFirst()
            state.slots[port.rawValue] = slot
            return first.continuation
        }
        waiter?.resume(returning: true)
    }

    /// Stops tracking `port`; its waiters finish (their `wait` returns false).
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func close(_ port: EventChannelPort) {
        let waiters = state.withLock { state in state.slots.removeValue(forKey: port.rawValue)?.waiters ?? [] }
        for waiter in waiters { waiter.continuation.resume(returning: false) }
    }

    /// Closes every port and refuses new ones (the interface was closed or the domain destroyed).
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func closeAll() {
        let waiters = state.withLock { state in
            state.closed = true
            defer { state.slots.removeAll() }
            return state.slots.values.flatMap(\.waiters)
        }
        for waiter in waiters { waiter.continuation.resume(returning: false) }
    }

    /// Waits for the next event on `port`: true for an event, false when the port closed or the task was
    /// cancelled. Consumes the pending bit.
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func wait(_ port: EventChannelPort) async -> Bool {
        let id = state.withLock { state in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Bool, Never>) in
                let immediate: Bool? = state.withLock { state in
                    guard var slot = state.slots[port.rawValue] else { return false }
                    if slot.pending {
                        slot.pending = false
                        state.slots[port.rawValue] = slot
                        return true
                    }
                    if Task.isCancelled { return false }
                    slot.waiters.append((id, continuation))
                    state.slots[port.rawValue] = slot
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter: UnsafeContinuation<Bool, Never>? = state.withLock { state in
                guard var slot = state.slots[port.rawValue],
                    let index = slot.waiters.firstIndex(where: { $0.id == id })
                else { return nil }
                let removed = slot.waiters.remove(at: index)
                state.slots[port.rawValue] = slot
                return removed.continuation
            }
            waiter?.resume(returning: false)
        }
    }

    /// The async sequence of events on `port`.
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func notifications(_ port: EventChannelPort) -> EventNotifications {
        EventNotifications(port: port, signals: self)
    }
}

/// The notifications of one port: an element (the port) per burst of `notify` calls.
///
/// Finishes when the port is unbound; `next()` returns nil when the waiting task is cancelled.
/// OCaml: `Xen_os.Activations.after` in a loop
public struct EventNotifications: AsyncSequence, Sendable {
    /// The port this sequence watches.
    public let port: EventChannelPort
    let signals: EventPortSignals

    /// Iterates notifications.
    ///
    /// OCaml: `Xen_os.Activations.after`
    public struct AsyncIterator: AsyncIteratorProtocol {
        let port: EventChannelPort
        let signals: EventPortSignals
        var finished = false

        /// Waits for the next burst; nil once the port is unbound or the task is cancelled.
        ///
        /// OCaml: `Xen_os.Activations.after`
        public mutating func next(
            isolation actor: isolated (any Actor)? = #isolation
        ) async throws(Never) -> EventChannelPort? {
            guard !finished else { return nil }
            if await signals.wait(port) { return port }
            finished = true
            return nil
        }

        /// Waits for the next burst; nil once the port is unbound or the task is cancelled.
        ///
        /// OCaml: `Xen_os.Activations.after`
        public mutating func next() async -> EventChannelPort? {
            await next(isolation: nil)
        }
    }

    /// Creates an iterator.
    ///
    /// Not in OCaml (part of the `Activations` machinery there).
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(port: port, signals: signals) }
}
