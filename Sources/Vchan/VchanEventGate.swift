import Synchronization

/// Where a vchan's tasks wait for "something may have changed": an event from the peer, the re-check
/// timer, a turn passed on, a close. A generation counter makes waiting race-free without holding a lock
/// across the ring check: a waiter notes the generation *before* looking at the ring and sleeps only while
/// it is unchanged, so a kick landing between the look and the sleep is never lost. Every kick wakes every
/// waiter (readers and writers re-check their own ring).
///
/// OCaml: `Vchan.S.EVENTS.recv` with its `event` token (mirage-xen `Activations.after`)
final class VchanEventGate: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var sleepers: [UInt64: UnsafeContinuation<Void, Never>] = [:]
        var nextSleeper: UInt64 = 0
    }

    private let state = Mutex(State())

    /// The current generation: take it before checking the rings.
    var generation: UInt64 { state.withLock { $0.generation } }

    /// Something changed: a new generation, every sleeper resumed (outside the lock).
    func kick() {
        let woken = state.withLock { state in
            state.generation &+= 1
            defer { state.sleepers.removeAll(keepingCapacity: true) }
            return Array(state.sleepers.values)
        }
        for continuation in woken { continuation.resume() }
    }

    /// Returns once the generation differs from `seen` (at once if it already does) or the task is
    /// cancelled; the caller checks `Task.isCancelled`.
    func wait(after seen: UInt64) async {
        let id = state.withLock { state in
            defer { state.nextSleeper &+= 1 }
            return state.nextSleeper
        }
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let sleeping = state.withLock { state in
                    guard state.generation == seen, !Task.isCancelled else { return false }
                    state.sleepers[id] = continuation
                    return true
                }
                if !sleeping { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.sleepers.removeValue(forKey: id) }?.resume()
        }
    }
}
