package import Synchronization

/// The back-off rule of every spinner (``SpinClock``'s polls, XenStoreClient's lone-reply wait): a
/// `sched_yield` between polls that comes back later than ``lateYield`` shows a busy neighbour holding the
/// core, so spinning stops for ``duration``. Atomic, so a spinner on any thread may consult it; relaxed loads,
/// as cheap as plain ones on the spinning path.
package final class SpinBackoff: Sendable {
    /// A yield longer than this (nanoseconds) starts a back-off; `.max`: never (tests pin it so, a loaded test
    /// host must not turn spinning off), 0: every yield does.
    package let lateYield: Atomic<UInt64>
    /// No spinning before this time (nanoseconds of `MonotonicClock`).
    private let until = Atomic<UInt64>(0)

    /// The default ``lateYield``: 100 µs, far above a yield to a peer that answers.
    package static let defaultLateYield: UInt64 = 100_000
    /// How long spinning stays off after a late yield: 50 ms, a few scheduler ticks.
    package static let duration: UInt64 = 50_000_000

    package init(lateYield: UInt64 = SpinBackoff.defaultLateYield) {
        self.lateYield = Atomic(lateYield)
    }

    /// Notes that a yield took `nanoseconds`; a late one starts a back-off from `now` (read from the clock only
    /// then, when not given: this runs after every yield of a spin). Returns whether it did.
    @discardableResult
    package func noteYield(_ nanoseconds: UInt64, now: UInt64? = nil) -> Bool {
        guard nanoseconds > lateYield.load(ordering: .relaxed) else { return false }
        until.store((now ?? MonotonicClock.nanoseconds()) &+ Self.duration, ordering: .relaxed)
        return true
    }

    /// True while a back-off started by a late yield lasts.
    package func isBackingOff(now: UInt64 = MonotonicClock.nanoseconds()) -> Bool {
        now < until.load(ordering: .relaxed)
    }

    /// Ends a back-off now (tests: "the back-off is over").
    package func end() { until.store(0, ordering: .relaxed) }
}
