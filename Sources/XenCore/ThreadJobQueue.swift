import Synchronization

/// The jobs waiting for an I/O thread that doubles as a Swift executor (XenStoreClient's and NBDClient's
/// connection threads), and whether that thread still takes them. The thread runs the queued jobs between
/// polls; once it exits (`retire`), jobs go to a fallback executor instead so that no task is stranded.
package final class ThreadJobQueue: Sendable {
    private struct State {
        var jobs: [UnownedJob] = []
        var retired = false
    }
    private let state = Mutex(State())

    package init() {}

    /// Queues `job`. Returns nil when the thread has retired (the caller hands the job elsewhere), else
    /// whether the queue was empty before (the thread may be asleep in `poll` and need a wake-up).
    package func push(_ job: UnownedJob) -> Bool? {
        state.withLock { state in
            guard !state.retired else { return nil }
            state.jobs.append(job)
            return state.jobs.count == 1
        }
    }

    /// Takes every queued job, oldest first.
    package func takeAll() -> [UnownedJob] {
        state.withLock { state in
            defer { state.jobs.removeAll(keepingCapacity: true) }
            return state.jobs
        }
    }

    /// True when no job is queued.
    package var isEmpty: Bool { state.withLock { $0.jobs.isEmpty } }

    /// True once the thread has exited.
    package var isRetired: Bool { state.withLock { $0.retired } }

    // MARK: - A thread that is a task executor with the global executor behind it

    /// Queues `job` for the thread, or, once the thread has retired, runs it on the global executor.
    /// True when the thread may be asleep in `poll` and needs a wake-up (the caller skips it when it is
    /// that thread).
    package func enqueueOrRunGlobally(_ job: UnownedJob) -> Bool {
        guard let wake = push(job) else {
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
            return false
        }
        return wake
    }

    /// Runs the jobs queued now on the calling thread, which is `executor`'s; true if more were queued
    /// meanwhile (the thread's next `poll` must not block).
    package func runQueued(on executor: UnownedTaskExecutor) -> Bool {
        let batch = takeAll()
        guard !batch.isEmpty else { return false }
        for job in batch { job.runSynchronously(on: executor) }
        return !isEmpty
    }

    /// The thread is exiting: jobs still queued, and later ones, run on the global executor.
    package func retireToGlobal() {
        for job in retire() { globalConcurrentExecutor.enqueue(ExecutorJob(job)) }
    }

    /// The thread is exiting: later `push`es are refused; returns the jobs still queued, oldest first.
    package func retire() -> [UnownedJob] {
        state.withLock { state in
            state.retired = true
            defer { state.jobs = [] }
            return state.jobs
        }
    }
}
