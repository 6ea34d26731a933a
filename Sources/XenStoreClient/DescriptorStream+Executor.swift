import Glibc
import XenCore

// The I/O thread doubles as a `TaskExecutor`: a task that prefers it (`XenStoreClient.executor`) is resumed
// right on the thread that read its reply, so a request-reply round trip costs one thread wake-up (the
// kernel waking the I/O thread), as a blocking `xs_read` does, instead of two (I/O thread, then a pool
// thread). Jobs run between polls; the thread never blocks in `poll` while jobs are waiting.
extension DescriptorStream: TaskExecutor {
    func enqueue(_ job: consuming ExecutorJob) {
        let wake = jobs.enqueueOrRunGlobally(UnownedJob(job))
        if wake && UInt(pthread_self()) != ioThread.load(ordering: .acquiring) { signal() }
    }

    /// Runs the jobs queued now; true if more were queued meanwhile (the next poll must not block).
    func runJobs() -> Bool { jobs.runQueued(on: asUnownedTaskExecutor()) }

    /// The I/O thread is exiting: hands queued and future jobs to the global executor.
    func retireExecutor() { jobs.retireToGlobal() }
}
