import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Runs a blocking C call on a thread of its own and resumes the caller with its result, so libxenstore's
/// blocking requests never occupy the cooperative pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        let job = BlockingJob { continuation.resume(returning: body()) }
        // No thread to spare: run inline rather than lose the call.
        if DetachedThread.spawn({ job.run() }) != 0 { job.run() }
    }
}

private final class BlockingJob: @unchecked Sendable {
    // @unchecked: run by exactly one thread.
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
