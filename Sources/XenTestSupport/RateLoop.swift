import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The throughput loops of the benchmarks and the Xen runner's bench group: some workers repeat one operation
/// until a deadline; the result is operations per second over the whole run. The clock is read once every 16
/// operations, so it costs next to nothing against a round trip.
///
/// OCaml: none (a measurement aid)
public enum RateLoop {
    /// Operations per second of `workers` tasks, each running `operation` in a loop for `seconds`, preferring
    /// `executor` when one is given. The first error an operation throws ends the run and is rethrown.
    ///
    /// Inlinable, so that the loop is specialised for `operation` in the caller: called through a closure
    /// context across modules it cost about 13% of the reads/s at 64 in flight on one core.
    ///
    /// OCaml: none
    @inlinable
    public static func tasks(
        _ workers: Int, seconds: Double, executor: (any TaskExecutor)? = nil,
        _ operation: @escaping @Sendable () async throws -> Void
    ) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<workers {
                group.addTask(executorPreference: executor) {
                    var count = 0
                    while clock.now < deadline {
                        for _ in 0..<16 { try await operation() }
                        count += 16
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        return rate(total, since: start)
    }

    /// Why a thread run failed.
    ///
    /// OCaml: none
    public enum Failure: Error, Equatable, Sendable {
        /// A thread could not be started (`pthread_create`'s error number).
        case cannotStartThread(errno: Int32)
        /// An operation returned false.
        case operationFailed
    }

    /// Operations per second of `workers` plain threads (for blocking calls, which must stay off the cooperative
    /// pool), each running `operation` in a loop for `seconds` until it returns false. Blocks the calling thread
    /// until every thread that started has ended.
    ///
    /// OCaml: none
    public static func threads(
        _ workers: Int, seconds: Double, _ operation: @escaping @Sendable () -> Bool
    ) throws(Failure) -> Double {
        let counts = Mutex<(done: Int, total: Int, failed: Bool)>((0, 0, false))
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        var started = 0
        var spawnError: Int32 = 0
        for _ in 0..<workers where spawnError == 0 {
            spawnError = DetachedThread.spawn {
                var count = 0
                var failed = false
                while !failed, clock.now < deadline {
                    for _ in 0..<16 where !failed { failed = !operation() }
                    count += 16
                }
                counts.withLock {
                    $0.done += 1
                    $0.total += count
                    $0.failed = $0.failed || failed
                }
            }
            if spawnError == 0 { started += 1 }
        }
        // The threads that did start may share what `operation` uses: wait for them before reporting anything.
        while counts.withLock({ $0.done }) < started { usleep(10_000) }
        let (_, total, failed) = counts.withLock { $0 }
        if spawnError != 0 { throw .cannotStartThread(errno: spawnError) }
        if failed { throw .operationFailed }
        return rate(total, since: start)
    }

    /// `count` operations over the time since `start`, per second.
    @usableFromInline
    static func rate(_ count: Int, since start: ContinuousClock.Instant) -> Double {
        Double(count) / (ContinuousClock.now - start).inSeconds
    }
}
