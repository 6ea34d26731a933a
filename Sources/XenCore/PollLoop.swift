#if canImport(Glibc)
    package import Glibc
#endif

/// What a ``PollLoop`` does next, as its client says before each round.
package enum PollLoopStep {
    /// The loop ends.
    case stop
    /// Go round again at once without polling (the client has more to do: a read that filled its buffer).
    case again
    /// Poll the set for up to `milliseconds` (-1: until something is ready). With `spin`, first poll without
    /// sleeping while the client's ``PollLoopClient/keepSpinning()`` holds, yielding the core between polls.
    case wait(milliseconds: Int32 = -1, spin: Bool = false)
}

/// A thread's side of a ``PollLoop``: what to poll each round, and what to do with what is ready. Called only
/// on the loop's thread, so a client keeps the thread's own state (buffers, decoders, spin clocks) unlocked.
package protocol PollLoopClient: AnyObject {
    /// Before each round, after the jobs queued for the thread ran (`jobsWaiting`: more were queued meanwhile,
    /// so the loop will not sleep). The client sets its entries in `fds` from index 1 on (index 0 is the
    /// loop's wake signal; the client may change how many entries follow it) and says how to wait.
    func prepare(_ fds: inout [pollfd], jobsWaiting: Bool) -> PollLoopStep
    /// While spinning (``PollLoopStep/wait(milliseconds:spin:)`` with `spin`): whether to poll once more
    /// without sleeping. `yielded`: how long the loop's last `sched_yield` took, in nanoseconds (nil before the
    /// spin's first), for ``SpinClock/keepSpinning(yielded:writes:)``.
    func keepSpinning(yielded: UInt64?) -> Bool
    /// After a poll that returned with something ready (the wake signal is already drained; `revents` tell
    /// which entries). False ends the loop.
    func ready(_ fds: [pollfd]) -> Bool
    /// `poll` failed (not `EINTR`, so `ENOMEM` or a bad set): true to go round again, false to end the loop.
    func failed(errno: Int32) -> Bool
}

extension PollLoopClient {
    package func keepSpinning(yielded: UInt64?) -> Bool { false }
    package func failed(errno: Int32) -> Bool { false }
}

/// The one poll loop of SwiftXen's I/O threads: the shared ``IOReactor`` (event channels, NBDServer's
/// listeners, TAP readers), XenStoreClient's transports, NBDClient's direct connections and NBDServer's
/// connections each run it on their thread, with a ``PollLoopClient`` for what differs. A round runs the
/// jobs of tasks that prefer the thread as their executor, asks the client what to poll, polls (never
/// sleeping while jobs wait; spinning first within the client's window, the policy of ``SpinClock``), drains
/// the ``WakeSignal`` and hands the ready entries to the client.
package enum PollLoop {
    /// Runs the loop on the calling thread until the client stops it or `poll` fails. `runJobs` runs the jobs
    /// queued for this thread and returns whether more were queued meanwhile.
    package static func run(
        _ client: some PollLoopClient, wake: WakeSignal, runJobs: () -> Bool = { false }
    ) {
        var fds = [wake.pollEntry]
        while true {
            let jobsWaiting = runJobs()
            let (milliseconds, spin): (Int32, Bool)
            switch client.prepare(&fds, jobsWaiting: jobsWaiting) {
            case .stop: return
            case .again: continue
            case .wait(let wait, let spinFirst): (milliseconds, spin) = (wait, spinFirst)
            }
            for index in fds.indices { fds[index].revents = 0 }
            var ready: Int32 = 0
            if jobsWaiting {
                ready = poll(&fds, nfds_t(fds.count), 0)
            } else {
                if spin {
                    ready = poll(&fds, nfds_t(fds.count), 0)
                    var yielded: UInt64?
                    while ready == 0, client.keepSpinning(yielded: yielded) {
                        yielded = SpinClock.yieldCore()
                        ready = poll(&fds, nfds_t(fds.count), 0)
                    }
                }
                if ready == 0 { ready = poll(&fds, nfds_t(fds.count), milliseconds) }
            }
            if ready < 0 {
                if errno == EINTR || client.failed(errno: errno) { continue }
                return
            }
            if fds[0].revents != 0 { wake.drain() }
            if ready > 0, !client.ready(fds) { return }
        }
    }
}
