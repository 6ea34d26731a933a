import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The one spin policy: spin within the window of the last traffic, and not while backing off after a yield
/// came back late (a busy neighbour on the core).
@Suite struct SpinClockTests {
    /// The answers of `clock` to `checks` (each: the yield before it, and the write count if any), in order.
    static func answers(_ clock: inout SpinClock, _ checks: [(UInt64?, UInt?)]) -> [Bool] {
        checks.map { clock.keepSpinning(yielded: $0.0, writes: $0.1) }
    }

    @Test func spinsWithinTheWindowOfTheLastTraffic() {
        var clock = SpinClock(window: 10_000_000_000)
        #expect(Self.answers(&clock, [(nil, nil), (1_000, nil)]) == [true, true])
        var none = SpinClock(window: 0)
        #expect(Self.answers(&none, [(nil, nil)]) == [false])
    }

    @Test func aWriteCountsAsTraffic() {
        var clock = SpinClock(window: 20_000_000, writes: 7)
        usleep(30_000)
        #expect(Self.answers(&clock, [(nil, 7), (nil, 8)]) == [false, true])
    }

    @Test func aLateYieldStopsSpinningForTheBackoff() {
        var clock = SpinClock(window: 10_000_000_000)
        let late = SpinBackoff.defaultLateYield + 1
        #expect(
            Self.answers(&clock, [(SpinBackoff.defaultLateYield, nil), (late, nil), (nil, nil)]) == [
                true, false, false,
            ])
        // Traffic does not end a back-off; its end does.
        clock.touch()
        #expect(Self.answers(&clock, [(nil, 1)]) == [false])
        usleep(UInt32(SpinBackoff.duration / 1000) + 10_000)
        #expect(Self.answers(&clock, [(nil, nil)]) == [true])
    }

    @Test func aPinnedClockNeverBacksOff() {
        var clock = SpinClock(window: 10_000_000_000)
        clock.backoff.lateYield.store(.max, ordering: .relaxed)
        #expect(Self.answers(&clock, [(1_000_000_000, nil), (nil, nil)]) == [true, true])
    }

    @Test func yieldingReportsItsDuration() {
        let before = MonotonicClock.nanoseconds()
        let took = SpinClock.yieldCore()
        #expect(took <= MonotonicClock.nanoseconds() &- before)
    }
}
