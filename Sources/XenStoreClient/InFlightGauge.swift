import Glibc
import Synchronization
import XenCore

/// The number of requests in flight, mirrored out of `MultiplexerState` (updated under its lock) so that a
/// transport's I/O thread can read it without the lock: it spins only while requests go one at a time (see
/// `DescriptorStream.Pusher`). Also lets a lone requester wait a moment for its reply before parking.
final class InFlightGauge: Sendable {
    let count = Atomic<Int>(0)
    /// How many batches of replies in a row answered a lone request (none other was in flight), up to 16.
    let loneStreak = Atomic<Int>(0)
    /// Bumped after every batch of received packets is dispatched.
    let deliveries = Atomic<UInt>(0)
    /// The `pthread_self()` of the I/O thread pushing replies on the current connection; 0 when replies come
    /// from a reader task (in-process transports) or none came yet.
    let readerThread = Atomic<UInt>(0)

    /// How long a lone requester waits for its reply before parking its task.
    static let replyWait: UInt64 = 50_000

    /// One request at a time: the last few replies were for lone requests and at most one is in flight now.
    /// With many in flight, replies come in bursts and are better gathered by a sleeping `poll`, and the
    /// requesters' pool threads have other tasks to run.
    var wantsSpin: Bool { count.load(ordering: .relaxed) <= 1 && loneStreak.load(ordering: .relaxed) >= 3 }

    /// A batch of replies is about to be dispatched with `pending` requests in flight (called under the state
    /// lock, so the load and store below do not race).
    func dispatching(pending: Int) {
        let streak = loneStreak.load(ordering: .relaxed)
        loneStreak.store(pending <= 1 ? min(streak + 1, 16) : 0, ordering: .relaxed)
    }

    /// A lone request just went out: waits (bounded by `replyWait`, yielding the core) until a batch of
    /// replies after `since` is dispatched, so that a reply arriving within a round trip finds the requester
    /// still running and its task continues without being parked and woken again (the pool thread hop that a
    /// blocking `xs_read` does not pay). Only over a connection with an I/O thread, never on that thread
    /// itself (a task preferring `client.executor`: the reply could not arrive while it waits), and only
    /// while requests go one at a time: otherwise returns at once.
    func awaitLoneReply(since: UInt) {
        let reader = readerThread.load(ordering: .relaxed)
        guard count.load(ordering: .relaxed) == 1, wantsSpin, reader != 0, reader != UInt(pthread_self()) else {
            return
        }
        let start = SpinClock.now()
        while deliveries.load(ordering: .acquiring) == since && SpinClock.now() &- start < Self.replyWait {
            sched_yield()
        }
    }

    /// Mirrors `state`'s count; called under the state lock after every change to `pending` that matters.
    func update(_ state: MultiplexerState) {
        count.store(state.pending.count, ordering: .relaxed)
    }
}
