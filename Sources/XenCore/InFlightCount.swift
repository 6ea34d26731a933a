import Synchronization

/// Counts operations under way and lets an owner wait until none is: how a device joins the requests that
/// may still touch its pages before it releases them ("join before you release").
///
/// OCaml: none (Lwt code joins the threads it spawned)
package final class InFlightCount: Sendable {
    private struct State {
        var count = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())

    package init() {}

    /// One more operation under way.
    package func enter() { state.withLock { $0.count += 1 } }

    /// One operation finished; wakes the waiters when it was the last.
    package func leave() {
        let woken = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.count -= 1
            guard state.count == 0 else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in woken { waiter.resume() }
    }

    /// Operations under way now.
    package var count: Int { state.withLock { $0.count } }

    /// Returns once no operation is under way.
    package func drained() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                guard state.count > 0 else { return true }
                state.waiters.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }
}
