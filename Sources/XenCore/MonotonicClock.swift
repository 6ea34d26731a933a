#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The one reading of `CLOCK_MONOTONIC` in the package: deadlines of blocking loops on plain threads (where
/// `ContinuousClock` would do too, this is the integer form the poll timeouts and spin windows want), spin
/// windows, and the test runner's and benchmarks' elapsed times.
package enum MonotonicClock {
    /// Nanoseconds of `CLOCK_MONOTONIC` (since an unspecified start, never going back).
    package static func nanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// The same clock in seconds, for elapsed times that are reported.
    package static func seconds() -> Double { Double(nanoseconds()) / 1e9 }
}
