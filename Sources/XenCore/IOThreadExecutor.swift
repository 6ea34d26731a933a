import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An I/O thread as a Swift executor: the one implementation behind `XenStoreClient.executor`,
/// `NBDClient.taskExecutor(connection:)` and the tasks NBDServer runs requests in. A task preferring it (or an
/// actor on it, with a serial fallback) is resumed on the thread that read its reply, so a request-reply round
/// trip costs the one wake-up a blocking client pays. The thread runs the queued jobs between polls
/// (``PollLoop``'s `runJobs`), and its loop never sleeps while jobs wait; once the thread exits (``retire()``),
/// jobs go to the fallback so that no task is stranded.
package final class IOThreadExecutor: SerialExecutor, TaskExecutor {
    /// Where jobs go once the thread has exited.
    package enum Fallback: Sendable {
        /// The global concurrent executor: for an executor used only as a task executor (its jobs then run
        /// with their own isolation, not as this serial executor's).
        case global
        /// A serial executor, so that an actor on this executor stays serial after the thread is gone.
        case serial(any SerialExecutor)
    }

    private struct State {
        var jobs: [UnownedJob] = []
        var retired = false
    }

    private let state = Mutex(State())
    private let thread = Atomic<UInt>(0)
    private let wake: WakeSignal
    private let fallback: Fallback

    /// An executor for the thread whose loop polls `wake` (signalled when a job arrives from another thread).
    package init(wake: WakeSignal, fallback: Fallback = .global) {
        self.wake = wake
        self.fallback = fallback
    }

    /// Called on the I/O thread as it starts: jobs it enqueues itself need no wake-up.
    package func attach() { thread.store(UInt(pthread_self()), ordering: .releasing) }

    /// True on the I/O thread.
    package var isOnThread: Bool { UInt(pthread_self()) == thread.load(ordering: .acquiring) }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let first = state.withLock { state -> Bool? in
            guard !state.retired else { return nil }
            state.jobs.append(job)
            return state.jobs.count == 1
        }
        guard let first else { return hand(job) }
        // Only the first job of a batch wakes the thread (it may be asleep in `poll`); the rest find it awake.
        if first && !isOnThread { wake.signal() }
    }

    /// Traps unless called on the thread running this executor's jobs: the I/O thread, or a serial fallback's
    /// once the I/O thread is gone.
    package func checkIsolated() {
        if state.withLock({ $0.retired }), case .serial(let serial) = fallback {
            serial.checkIsolated()
        } else {
            precondition(isOnThread, "not on the I/O thread of this executor")
        }
    }

    /// On the I/O thread: runs the jobs queued now, oldest first; true if more were queued meanwhile (the
    /// thread's next `poll` must not block).
    package func runJobs() -> Bool {
        let batch = state.withLock { state in
            defer { state.jobs.removeAll(keepingCapacity: true) }
            return state.jobs
        }
        guard !batch.isEmpty else { return false }
        let task = asUnownedTaskExecutor()
        if case .serial = fallback {
            let serial = asUnownedSerialExecutor()
            for job in batch { job.runSynchronously(isolatedTo: serial, taskExecutor: task) }
        } else {
            // A task executor only: the jobs keep their own isolation (a default actor's job runs the actor).
            for job in batch { job.runSynchronously(on: task) }
        }
        return state.withLock { !$0.jobs.isEmpty }
    }

    /// The I/O thread is exiting: jobs still queued, and later ones, go to the fallback.
    package func retire() {
        let left = state.withLock { state in
            state.retired = true
            defer { state.jobs = [] }
            return state.jobs
        }
        for job in left { hand(job) }
    }

    private func hand(_ job: UnownedJob) {
        switch fallback {
        case .global: globalConcurrentExecutor.enqueue(ExecutorJob(job))
        case .serial(let serial): serial.enqueue(ExecutorJob(job))
        }
    }
}
