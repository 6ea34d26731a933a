/// The one spin policy of SwiftXen's I/O threads (XenStoreClient's transport, NBDServer's connections): after
/// traffic, a thread keeps polling its descriptors without sleeping for a bounded window, yielding the core
/// between polls, so that the next request or reply finds it awake. ``PollLoop`` spins while its client's
/// clock is ``active``.
///
/// Why: a request-reply round trip on one machine takes some tens of microseconds, and a thread asleep in
/// `poll` adds a wake-up to each — on a VM whose idle vCPUs halt, a wake-up of a halted vCPU costs more than
/// the rest of the round trip (measured: an NBD server at queue depth 1 does 0.75x `nbdkit`'s reads per
/// second asleep in `poll`, 1.2–1.3x polling). Bounded: an idle connection costs at most `window` of CPU once,
/// then sleeps; `sched_yield` between polls hands the core to any thread that can run on it.
package struct SpinClock {
    /// How long after the last traffic the thread stays awake, in nanoseconds.
    package let window: UInt64
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

    /// True while within `window` of the last traffic; `writes` (the stream's write count) changing counts as
    /// traffic.
    package mutating func active(writes: UInt) -> Bool {
        if writes != self.writes {
            self.writes = writes
            last = MonotonicClock.nanoseconds()
        }
        return active
    }

    /// True while within `window` of the last traffic.
    package var active: Bool { MonotonicClock.nanoseconds() &- last < window }
}
