#if canImport(Glibc)
    import Glibc
#endif

/// The one spin policy of SwiftXen's I/O threads (XenStoreClient's transport, NBDServer's connections): after
/// traffic, a thread keeps polling its descriptors without sleeping for a bounded window, yielding the core
/// between polls, so that the next request or reply finds it awake. ``PollLoop`` spins while its client's
/// clock says ``keepSpinning(yielded:writes:)``.
///
/// Why: a request-reply round trip on one machine takes some tens of microseconds, and a thread asleep in
/// `poll` adds a wake-up to each — on a VM whose idle vCPUs halt, a wake-up of a halted vCPU costs more than
/// the rest of the round trip (measured: an NBD server at queue depth 1 does 0.75x `nbdkit`'s reads per
/// second asleep in `poll`, 1.2–1.3x polling). Bounded: an idle connection costs at most `window` of CPU once,
/// then sleeps; `sched_yield` between polls hands the core to any thread that can run on it.
///
/// And only where the core is ours: a `sched_yield` that comes back late (``SpinBackoff/lateYield``) shows a busy neighbour
/// on the core (another runnable thread, not the peer answering). A spinner then waits behind it until the next
/// scheduler tick on every round trip, and the requester's woken pool thread waits for a core the neighbour
/// holds, while a thread asleep in `poll` (or on a futex) is woken, and preempts it, as soon as its reply
/// lands. So a late yield turns this clock's spinning off for ``SpinBackoff/duration``. Measured on this 2-core VM beside
/// CPU-bound work: XenStoreClient at 1 in flight on the default executor went from a few hundred reads/s to
/// some thousands (Documentation/Benchmarks.md, "On a busy host").
package struct SpinClock {
    /// How long after the last traffic the thread stays awake, in nanoseconds.
    package let window: UInt64
    /// This clock's back-off after a late yield (its own: one busy core does not stop other threads' spins).
    package let backoff = SpinBackoff()
    private var last: UInt64
    private var writes: UInt

    /// A clock that starts with traffic now; `writes` is the caller's write count, if it keeps one.
    package init(window: UInt64 = 100_000, writes: UInt = 0) {
        self.window = window
        self.last = MonotonicClock.nanoseconds()
        self.writes = writes
    }

    /// Marks traffic now.
    package mutating func touch() { last = MonotonicClock.nanoseconds() }

    /// Whether a spinning thread polls once more: within `window` of the last traffic (a change of `writes`, the
    /// caller's write count if it keeps one, counts as traffic) and not backing off. `yielded` is how long the
    /// yield before this check took (nil before a spin's first yield); a late one starts a back-off.
    package mutating func keepSpinning(yielded: UInt64?, writes: UInt? = nil) -> Bool {
        let now = MonotonicClock.nanoseconds()
        if let yielded { backoff.noteYield(yielded, now: now) }
        if backoff.isBackingOff(now: now) { return false }
        if let writes, writes != self.writes {
            self.writes = writes
            last = now
        }
        return now &- last < window
    }

    /// Yields the core (`sched_yield`), as a spinner does between polls; returns how long that took in
    /// nanoseconds, for ``keepSpinning(yielded:writes:)`` or a spinner's own back-off.
    package static func yieldCore() -> UInt64 {
        let before = MonotonicClock.nanoseconds()
        sched_yield()
        return MonotonicClock.nanoseconds() &- before
    }
}
