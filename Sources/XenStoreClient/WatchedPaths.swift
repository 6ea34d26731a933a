import Synchronization

/// The watch set of one `wait`: the paths currently watched, and the pure rule for moving it to the paths
/// the body read in its last run (add the new ones, remove the ones no longer read). Keeping exactly the
/// last run's paths is what stops watches from piling up over thousands of re-runs.
///
/// OCaml: none (`Xs_client_lwt.S.wait` adds `accessed_paths` to `watched_paths` and never removes)
struct WatchedPaths: Equatable {
    /// Watched paths in the order they were added.
    private(set) var paths: [String] = []

    /// What to change to watch exactly `wanted`: `add` in first-read order, `remove` in watch order.
    func adjust(to wanted: [String]) -> (add: [String], remove: [String]) {
        let current = Set(paths)
        let target = Set(wanted)
        var seen = Set<String>()
        let add = wanted.filter { !current.contains($0) && seen.insert($0).inserted }
        let remove = paths.filter { !target.contains($0) }
        return (add, remove)
    }

    mutating func insert(_ path: String) {
        if !paths.contains(path) { paths.append(path) }
    }

    mutating func remove(_ path: String) {
        paths.removeAll { $0 == path }
    }
}

/// Records the paths a `wait` body reads (read, directory, permissions(of:), exists), in first-read order.
final class AccessRecorder: Sendable {
    private let state = Mutex<(order: [String], seen: Set<String>)>(([], []))

    func record(_ path: String) {
        state.withLock { state in
            if state.seen.insert(path).inserted { state.order.append(path) }
        }
    }

    var paths: [String] { state.withLock { $0.order } }
}

/// The wake-up of one `wait`: set by any event for its token, consumed by `wait()`. Events arriving while
/// the body runs are remembered (the flag), so a change between a read and the wait is never missed.
final class WaitSignal: WatchSink, Sendable {
    enum Outcome: Sendable {
        case fired
        case cancelled
        case timedOut
        case finished(XenStoreError)
    }

    private struct State {
        var fired = false
        var failure: XenStoreError?
        var cancelled = false
        var expired = false
        var waiter: UnsafeContinuation<Outcome, Never>?
    }

    private let state = Mutex(State())

    func deliver(_ event: XenStoreWatchEvent) {
        let waiter = state.withLock { state -> UnsafeContinuation<Outcome, Never>? in
            state.fired = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: .fired)
    }

    func finish(_ error: XenStoreError) {
        let waiter = state.withLock { state -> UnsafeContinuation<Outcome, Never>? in
            state.failure = error
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: .finished(error))
    }

    /// The wait's time limit ran out: wakes it (now, or at its next `wait()`) with `.timedOut`.
    func expire() {
        let waiter = state.withLock { state -> UnsafeContinuation<Outcome, Never>? in
            state.expired = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: .timedOut)
    }

    /// True once the connection (suspend, loss, close) ended this wait: its watches are gone with it.
    var isFinishedByConnection: Bool { state.withLock { $0.failure != nil } }

    /// Forgets events seen so far (called right before each run of the body).
    func reset() { state.withLock { $0.fired = false } }

    /// Returns at once if an event arrived since `reset`, else when one does, the task is cancelled, the time
    /// limit runs out, or the connection ends the wait.
    func wait() async -> Outcome {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Outcome, Never>) in
                let now = state.withLock { state -> Outcome? in
                    if let failure = state.failure { return .finished(failure) }
                    if state.cancelled || Task.isCancelled { return .cancelled }
                    if state.expired { return .timedOut }
                    if state.fired {
                        state.fired = false
                        return .fired
                    }
                    state.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> UnsafeContinuation<Outcome, Never>? in
                state.cancelled = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: .cancelled)
        }
    }
}
