import Synchronization

/// Counts the operations inside a device (writers filling shared pages, writes on a file descriptor) so that
/// closing can wait for them: what they touch is released only once the last one has left.
///
/// OCaml: none (Lwt code holds `tx_mutex` for the same purpose)
public final class InFlightGate: Sendable {
    private struct State {
        var count = 0
        var closed = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    /// An open gate.
    public init() {}

    /// Enters; false once the gate is closed (the operation must not start).
    public func enter() -> Bool {
        state.withLock { state in
            guard !state.closed else { return false }
            state.count += 1
            return true
        }
    }

    /// Leaves (after a successful ``enter()``).
    public func leave() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.count -= 1
            guard state.count == 0, state.closed else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Closes the gate (later ``enter()`` calls fail) and returns once every operation inside has left.
    public func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let empty = state.withLock { state -> Bool in
                state.closed = true
                if state.count == 0 { return true }
                state.waiters.append(continuation)
                return false
            }
            if empty { continuation.resume() }
        }
    }
}
