import Glibc
import Synchronization

/// Jobs waiting for the I/O thread, and whether that thread still takes them.
struct JobQueue {
    var jobs: [UnownedJob] = []
    /// The I/O thread has exited: jobs go to the global executor instead.
    var retired = false
}

// The I/O thread doubles as a `TaskExecutor`: a task that prefers it (`XenStoreClient.executor`) is resumed
// right on the thread that read its reply, so a request-reply round trip costs one thread wake-up (the
// kernel waking the I/O thread), as a blocking `xs_read` does, instead of two (I/O thread, then a pool
// thread). Jobs run between polls; the thread never blocks in `poll` while jobs are waiting.
extension DescriptorStream: TaskExecutor {
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let (accepted, wake) = jobs.withLock { queue -> (Bool, Bool) in
            guard !queue.retired else { return (false, false) }
            queue.jobs.append(job)
            return (true, queue.jobs.count == 1)
        }
        guard accepted else {
            // The connection is gone: run the task on the global executor rather than never.
            globalConcurrentExecutor.enqueue(job)
            return
        }
        if wake && UInt(pthread_self()) != ioThread.load(ordering: .acquiring) { signal() }
    }

    /// Runs the jobs queued now; true if more were queued meanwhile (the next poll must not block).
    func runJobs() -> Bool {
        let batch = jobs.withLock { queue -> [UnownedJob] in
            defer { queue.jobs = [] }
            return queue.jobs
        }
        guard !batch.isEmpty else { return false }
        let executor = asUnownedTaskExecutor()
        for job in batch { job.runSynchronously(on: executor) }
        return jobs.withLock { !$0.jobs.isEmpty }
    }

    /// The I/O thread is exiting: hands queued and future jobs to the global executor.
    func retireExecutor() {
        let leftover = jobs.withLock { queue -> [UnownedJob] in
            queue.retired = true
            defer { queue.jobs = [] }
            return queue.jobs
        }
        for job in leftover { globalConcurrentExecutor.enqueue(job) }
    }
}
