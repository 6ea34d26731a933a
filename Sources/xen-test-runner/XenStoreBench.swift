import CXen
import XenCore
import XenStoreClient
import XenTestSupport

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The `bench` group's XenStore rows: reads per second from dom0 against this boot's daemon, over the unix
/// socket and over /dev/xen/xenbus, of one small key. The peer is libxenstore: `xs_read` in a loop on 1 and on 8
/// threads sharing one `xs_open` handle (its handle is thread-safe: a mutex inside); ours is one XenStoreClient
/// with 1 and with 64 reads in flight (tasks on the default executor). Each figure is one run of `seconds`,
/// with where dom0's CPU went meanwhile (the check's detail): the daemon's share of one vCPU (its utime + stime
/// in /proc/<pid>/stat), and every dom0 CPU's busy time per read (/proc/stat, whoever spent it). A daemon near
/// 100% of a vCPU bounds every client, however many reads it keeps in flight.
enum XenStoreBench {
    static let key = "/xt/bench/key"
    static let seconds = BenchChecks.quick ? 1 : 3

    /// Three rows per transport: ours at 1 in flight vs 1 thread (on the default executor, and preferring the
    /// connection's I/O thread), ours at 64 in flight vs the better of 1 and 8 threads.
    static func run(_ report: Report) async -> [BenchRow] {
        var rows: [BenchRow] = []
        for transport in LibXenstoreChecks.Transport.allCases {
            let name = transport.rawValue
            var figures: [String: Double] = [:]
            var why: String?
            await report.check(
                "bench: xenstore reads/s over \(name), \(seconds) s each: XenStoreClient 1/64 in flight, "
                    + "libxenstore 1/8 threads",
                limit: 120
            ) {
                do {
                    let measured = try await measure(transport)
                    figures = measured.mapValues(\.rate)
                    report.detail(
                        measured.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                } catch {
                    why = "\(error)"
                    throw error
                }
            }
            let best = max(figures["libxenstore 1 thread"] ?? 0, figures["libxenstore 8 threads"] ?? 0)
            rows.append(
                BenchRow(
                    label: "xenstore[\(name)] reads/s XenStoreClient 1 in flight vs libxenstore 1 thread",
                    ours: figures["ours 1"], peer: figures["libxenstore 1 thread"], note: why))
            rows.append(
                BenchRow(
                    label: "xenstore[\(name)] reads/s XenStoreClient 1 in flight, client.executor vs 1 thread",
                    ours: figures["ours 1 executor"], peer: figures["libxenstore 1 thread"], note: why))
            rows.append(
                BenchRow(
                    label: "xenstore[\(name)] reads/s XenStoreClient 64 in flight vs libxenstore best of 1/8",
                    ours: figures["ours 64"], peer: best > 0 ? best : nil, note: why))
        }
        return rows
    }

    /// One figure and where dom0's CPU went while it was measured.
    struct Sample: CustomStringConvertible {
        var rate: Double
        /// The daemon's CPU time over the run's wall time (1.0: one vCPU all the time); nil if not found.
        var daemonShare: Double?
        /// Every dom0 CPU's busy time per read, in microseconds.
        var dom0PerRead: Double
        /// Context switches of the runner's threads per read (voluntary: a thread went to sleep, for each of
        /// which a wake-up follows; involuntary: preempted): the thread wake-ups a read costs the client.
        var switchesPerRead: Double
        /// The runner's own CPU per read in microseconds, in user space and in the kernel (system calls, page
        /// faults): the client's share of dom0's.
        var clientUser: Double
        var clientSystem: Double

        var description: String {
            "\(Int(rate))/s (daemon " + (daemonShare.map { "\(Int($0 * 100))%" } ?? "?") + " of a vCPU, dom0 "
                + BenchChecks.fixed(dom0PerRead, 0) + " µs CPU, client " + BenchChecks.fixed(clientUser, 0)
                + " µs user + "
                + BenchChecks.fixed(clientSystem, 0) + " µs system and " + BenchChecks.fixed(switchesPerRead, 1)
                + " context switches per read)"
        }
    }

    /// Runs `body` (a reads/s figure) and samples the daemon's and dom0's CPU time around it.
    static func sampled(_ body: () async throws -> Double) async rethrows -> Sample {
        let daemon = daemonSeconds()
        let before = usage()
        let busy = BlockBench.dom0BusySeconds()
        let started = MonotonicClock.seconds()
        let rate = try await body()
        let wall = MonotonicClock.seconds() - started
        let spent = BlockBench.dom0BusySeconds() - busy
        let after = usage()
        let daemonAfter = daemonSeconds()
        let share = daemon.flatMap { start in daemonAfter.map { ($0 - start) / wall } }
        let reads = max(rate * wall, 1)
        return Sample(
            rate: rate, daemonShare: share, dom0PerRead: spent * 1e6 / reads,
            switchesPerRead: Double(after.switches - before.switches) / reads,
            clientUser: (after.user - before.user) * 1e6 / reads,
            clientSystem: (after.system - before.system) * 1e6 / reads)
    }

    /// This process's context switches (voluntary and not) and CPU seconds in user space and in the kernel so far,
    /// every thread's, ended ones included (`getrusage(RUSAGE_SELF)`).
    static func usage() -> (switches: Int, user: Double, system: Double) {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return (0, 0, 0) }
        let seconds = { (time: timeval) in Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return (usage.ru_nvcsw + usage.ru_nivcsw, seconds(usage.ru_utime), seconds(usage.ru_stime))
    }

    /// CPU seconds the running xenstored or oxenstored has used (USER_HZ = 100 ticks); nil if neither runs.
    static func daemonSeconds() -> Double? {
        guard let pid = (DomUChecks.processes(named: "xenstored") + DomUChecks.processes(named: "oxenstored")).first,
            let stat = Files.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")")
        else { return nil }
        // After "pid (comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / 100
    }

    /// Ours and libxenstore's, alternating, over one transport.
    static func measure(_ transport: LibXenstoreChecks.Transport) async throws -> [String: Sample] {
        let handle = SharedHandle(try transport.open())
        defer { xs_close(handle.handle) }
        try require(xs_write(handle.handle, 0, key, "value", 5), errnoText("xs_write \(key)"))
        let client = try await XenStoreClientChecks.Transport(rawValue: transport.rawValue)!.client()
        var figures: [String: Sample] = [:]
        do {
            figures["ours 1"] = try await sampled { try await clientRate(client, inFlight: 1) }
            figures["libxenstore 1 thread"] = try await sampled { try await libxenstoreRate(handle, threads: 1) }
            figures["ours 64"] = try await sampled { try await clientRate(client, inFlight: 64) }
            figures["libxenstore 8 threads"] = try await sampled { try await libxenstoreRate(handle, threads: 8) }
            figures["ours 1 executor"] = try await sampled {
                try await clientRate(client, inFlight: 1, executor: client.executor)
            }
        } catch {
            await client.close()
            throw error
        }
        await client.close()
        return figures
    }

    /// Reads per second from `inFlight` tasks sharing `client`, preferring `executor` (the connection's I/O
    /// thread: one wake-up per round trip instead of two) when given.
    static func clientRate(
        _ client: XenStoreClient, inFlight: Int, executor: (any TaskExecutor)? = nil
    ) async throws -> Double {
        try await RateLoop.tasks(inFlight, seconds: Double(seconds), executor: executor) {
            let value = try await client.immediate { handle throws(XenStoreError) in try await handle.readBytes(key) }
            try require(value.count == 5, "read \(value.count) bytes of \(key)")
        }
    }

    /// Reads per second from `threads` plain threads calling `xs_read` on the shared handle (on a thread of the
    /// blocking pool that waits for them).
    static func libxenstoreRate(_ shared: SharedHandle, threads: Int) async throws -> Double {
        let result = await blocking { () -> Result<Double, RateLoop.Failure> in
            Result { () throws(RateLoop.Failure) in
                try RateLoop.threads(threads, seconds: Double(seconds)) { shared.read(key) }
            }
        }
        switch result {
        case .success(let rate): return rate
        case .failure(.cannotStartThread(let code)): throw CheckFailure("cannot start a thread: errno \(code)")
        case .failure(.operationFailed): throw CheckFailure(errnoText("xs_read \(key)"))
        }
    }

    /// libxenstore's handle, carried across threads (it locks inside).
    final class SharedHandle: @unchecked Sendable {
        let handle: OpaquePointer
        init(_ handle: OpaquePointer) { self.handle = handle }

        /// One `xs_read`; false when it failed or the value is not the 5 bytes written.
        func read(_ path: String) -> Bool {
            var length: UInt32 = 0
            guard let value = xs_read(handle, 0, path, &length) else { return false }
            free(value)
            return length == 5
        }
    }
}
