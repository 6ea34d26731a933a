extension Duration {
    /// The duration in whole nanoseconds (negative for a negative duration), `±Int64.max / 2` where that
    /// would overflow: the one conversion the clients' timeouts, the xenstore retry policy and the NBD
    /// server's deadlines and spin window share.
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (total, carried) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow || carried { return seconds < 0 ? -(Int64.max / 2) : Int64.max / 2 }
        return total
    }

    /// The duration in seconds, as a `Double`: the one conversion the benchmarks, the demo and the Xen runner's
    /// rates share.
    package var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
