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

    /// Replies handed to their requesters whose tasks have not run on yet (resumed, waiting for a thread of
    /// their executor). While any is waiting, nobody spins: a requester spinning for its own reply would keep
    /// the thread those tasks need, and with many tasks sharing one core that turns into lockstep (each task
    /// sends, spins until its reply, and only then lets the next task send: measured 46k reads/s for 64 tasks
    /// pinned to one core, four context switches a read, against 575k when the tasks ran on `client.executor`).
    let woken = Atomic<Int>(0)

    /// The task that sent the last request (its `UnsafeCurrentTask` hash), and how many replies in a row
    /// `awaitLoneReply` waited for (see there).
    let lastRequester = Atomic<Int>(0)
    let caughtInARow = Atomic<Int>(0)

    /// How long a lone requester waits for its reply before parking its task.
    static let replyWait: UInt64 = 50_000

    /// A late yield in that wait turns waiting off for a while: a busy neighbour shares the core (see
    /// `SpinClock`). Per connection; tests pin its `lateYield`.
    let backoff = SpinBackoff()

    /// One request at a time: the last few replies were for lone requests and at most one is in flight now.
    /// With many in flight, replies come in bursts and are better gathered by a sleeping `poll`, and the
    /// requesters' pool threads have other tasks to run.
    var wantsSpin: Bool {
        count.load(ordering: .relaxed) <= 1 && loneStreak.load(ordering: .relaxed) >= 3
            && woken.load(ordering: .relaxed) == 0
    }

    /// `replies` replies are about to be resumed (before their continuations are).
    func waking(_ replies: Int) {
        if replies > 0 { woken.add(replies, ordering: .relaxed) }
    }

    /// A requester's task runs on after its reply (after `waking`).
    func ran() { woken.subtract(1, ordering: .relaxed) }

    /// A batch of replies is about to be dispatched with `pending` requests in flight (called under the state
    /// lock, so the load and store below do not race).
    func dispatching(pending: Int) {
        let streak = loneStreak.load(ordering: .relaxed)
        loneStreak.store(pending <= 1 ? min(streak + 1, 16) : 0, ordering: .relaxed)
    }

    /// A lone request just went out: waits (bounded by `replyWait`, yielding the core; not while `backoff` lasts after a yield came back late) until a batch of
    /// replies after `since` is dispatched, so that a reply arriving within a round trip finds the requester
    /// still running and its task continues without being parked and woken again (the pool thread hop that a
    /// blocking `xs_read` does not pay). Returns whether it waited.
    ///
    /// Only when one task sends requests one after another: over a connection with an I/O thread, never on
    /// that thread itself (a task preferring `client.executor`: the reply could not arrive while it waits),
    /// with no other request in flight and no other requester's task resumed and waiting to run, and only for
    /// the task that sent the previous request too. The last condition keeps a task from hogging its thread:
    /// a reply caught here lets the task continue without suspending, so on a pool with one thread (a process
    /// pinned to one core) the first of 64 tasks would otherwise send, catch, send on for its whole run while
    /// the other 63 never start (measured: 64 tasks did the reads/s of one, 51k against 543k).
    @discardableResult
    func awaitLoneReply(since: UInt) -> Bool {
        let me = withUnsafeCurrentTask { task in task?.hashValue ?? 0 }
        let previous = lastRequester.load(ordering: .relaxed)
        if previous != me { lastRequester.store(me, ordering: .relaxed) }
        let reader = readerThread.load(ordering: .relaxed)
        // The clock is read only once the cheap conditions hold: this runs for every request.
        guard previous == me, me != 0, count.load(ordering: .relaxed) == 1, wantsSpin, reader != 0,
            reader != UInt(pthread_self()), case let start = MonotonicClock.nanoseconds(),
            !backoff.isBackingOff(now: start)
        else {
            if caughtInARow.load(ordering: .relaxed) != 0 { caughtInARow.store(0, ordering: .relaxed) }
            return false
        }
        while deliveries.load(ordering: .acquiring) == since && MonotonicClock.nanoseconds() &- start < Self.replyWait {
            if backoff.noteYield(SpinClock.yieldCore()) { break }
        }
        return true
    }

    /// After a reply `awaitLoneReply` waited for: true once every `yieldEvery` such replies in a row, when the
    /// requester should `Task.yield()` so that tasks queued behind it on its thread (which cannot have sent
    /// a request yet, or it would not have waited) get to run.
    func yieldDue() -> Bool {
        caughtInARow.wrappingAdd(1, ordering: .relaxed).newValue % Self.yieldEvery == 0
    }

    static let yieldEvery = 256

    /// Mirrors `state`'s count; called under the state lock after every change to `pending` that matters.
    func update(_ state: MultiplexerState) {
        count.store(state.pending.count, ordering: .relaxed)
    }
}
