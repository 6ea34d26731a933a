import Glibc

/// When the I/O thread last saw traffic: it keeps polling without sleeping until `window` after that.
struct SpinClock {
    /// How long after the last read or write the I/O thread stays awake. A request-reply round trip on one
    /// machine takes some tens of microseconds; a thread sleeping in `poll` and woken by the reply adds a
    /// wake-up to each. Bounded: an idle connection costs at most this much CPU once, then sleeps.
    static let window: UInt64 = 100_000

    private var last: UInt64
    private var writes: UInt

    init(writes: UInt) {
        self.last = Self.now()
        self.writes = writes
    }

    /// Marks traffic now.
    mutating func touch() { last = Self.now() }

    /// True while within `window` of the last traffic; `writes` (the stream's write count) changing counts as
    /// traffic.
    mutating func active(writes: UInt) -> Bool {
        let now = Self.now()
        if writes != self.writes {
            self.writes = writes
            last = now
        }
        return now &- last < Self.window
    }

    /// CLOCK_MONOTONIC in nanoseconds.
    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }
}
