import Glibc

// The I/O thread doubles as a serial and task executor: a task or actor on it is resumed right on the
// thread that read its reply and its next request is batched into that thread's next `sendmsg`. Jobs run
// between polls; the thread never blocks in `poll` while jobs are waiting.
extension NBDDirectConnection: SerialExecutor, TaskExecutor {
    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        guard let wake = jobs.push(job) else {
            // The connection is gone: one serial executor takes over, so an actor on it stays serial.
            fallback.enqueue(ExecutorJob(job))
            return
        }
        if wake && !onIOThread { signal() }
    }

    /// Traps unless called on the thread running this executor's jobs: the I/O thread, or the fallback
    /// executor once the connection is gone.
    func checkIsolated() {
        if jobs.isRetired {
            fallback.checkIsolated()
        } else {
            precondition(onIOThread, "not on the NBD connection's I/O thread")
        }
    }

    /// Runs the jobs queued now; true if more were queued meanwhile (the next poll must not block).
    func runJobs() -> Bool {
        let batch = jobs.takeAll()
        guard !batch.isEmpty else { return false }
        let serial = asUnownedSerialExecutor()
        let task = asUnownedTaskExecutor()
        for job in batch { job.runSynchronously(isolatedTo: serial, taskExecutor: task) }
        return !jobs.isEmpty
    }

    /// The I/O thread is exiting: hands queued and future jobs to the fallback executor.
    func retireExecutor() {
        for job in jobs.retire() { fallback.enqueue(ExecutorJob(job)) }
    }
}
