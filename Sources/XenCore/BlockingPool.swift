#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The one pool of OS threads for blocking calls in SwiftXen (file I/O, `fsync`, log writes, blocking connects,
/// reads of a pipe or a terminal, libxenstore's blocking requests in the test runner): the cooperative pool
/// must never block. Like NIO's `NIOThreadPool`, one shared instance serves every component.
///
/// One FIFO queue, `width` threads for short calls (started on demand; they stay), and extra threads for
/// calls that may block for as long as a peer pleases: for such a call (`mayBlockIndefinitely`) a thread is
/// started whenever none is idle, and threads busy with such calls do not count against `width` — so a
/// connect to a dead host or a read of an idle pipe never starves the short calls, and short calls keep to
/// `width` threads. Extra threads stay for
/// `spareLifetime` after their last job (a relay reading a pipe chunk after chunk reuses one thread instead of
/// starting one per chunk), then exit. Threads are started through ``DetachedThread``.
///
/// `@unchecked Sendable`: every stored `var` is accessed with `mutex` held.
package final class BlockingPool: @unchecked Sendable {
    /// Shared by every component in the process.
    package static let shared = BlockingPool(width: 4)

    /// How long an extra thread waits for another job before it exits, in seconds.
    package let spareLifetime: Int

    private typealias Job = @Sendable () -> Void

    private var jobs: [(job: Job, mayBlock: Bool)] = []
    private var head = 0
    /// Threads running (waiting or working), how many of them are waiting for a job, and how many run a call
    /// that may block indefinitely.
    private var threads = 0
    private var idle = 0
    private var blocking = 0
    private let width: Int
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// A pool keeping `width` threads for short calls, extra threads `spareLifetime` seconds after their last
    /// call (the shared one serves every component; tests make their own).
    package init(width: Int, spareLifetime: Int = 5) {
        self.width = max(1, width)
        self.spareLifetime = max(1, spareLifetime)
        condition = .allocate(capacity: 1)
        mutex = .allocate(capacity: 1)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
        pthread_mutex_init(mutex, nil)
    }

    /// Runs `job` on a pool thread and resumes the caller with its result. `mayBlockIndefinitely`: the call
    /// waits on something outside this process's control (a peer, a pipe, a terminal): it gets a thread at
    /// once instead of queueing behind busy ones.
    package func run<T: Sendable, E: Error>(
        mayBlockIndefinitely: Bool = false, _ job: @escaping @Sendable () throws(E) -> T
    ) async throws(E) -> T {
        let result: Result<T, E> = await withUnsafeContinuation { continuation in
            submit(mayBlockIndefinitely: mayBlockIndefinitely) {
                do throws(E) { continuation.resume(returning: .success(try job())) } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// Threads running now, and how many of them wait for a job (for tests and diagnostics).
    package var threadCounts: (running: Int, idle: Int) {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return (threads, idle)
    }

    private func submit(mayBlockIndefinitely: Bool, _ job: @escaping Job) {
        pthread_mutex_lock(mutex)
        jobs.append((job, mayBlockIndefinitely))
        let queued = jobs.count - head
        let start = reserveThread(for: mayBlockIndefinitely)
        if queued <= idle { pthread_cond_signal(condition) }
        pthread_mutex_unlock(mutex)
        if start { startThread() }
    }

    /// With `mutex` held: whether a thread must be started for the jobs queued now (more of them than idle
    /// threads, and room under the width, or the newest job may block without bound); if so, counts it.
    /// Asked again whenever a thread takes a call that may block, since that thread no longer counts against
    /// the width: a short call queued behind it would otherwise wait for a thread nobody starts.
    private func reserveThread(for mayBlock: Bool) -> Bool {
        guard jobs.count - head > idle, threads - blocking < width || mayBlock else { return false }
        threads += 1
        return true
    }

    private func startThread() {
        if DetachedThread.spawn({ [self] in loop() }) != 0 {
            pthread_mutex_lock(mutex)
            threads -= 1
            // No thread could be started (resource exhaustion): run the queued jobs here rather than never,
            // unless a thread of the pool is left to run them.
            let orphaned = threads == 0 ? takeAll() : []
            pthread_mutex_unlock(mutex)
            for job in orphaned { job() }
        }
    }

    /// Empties the queue (with `mutex` held).
    private func takeAll() -> [Job] {
        defer {
            jobs.removeAll(keepingCapacity: true)
            head = 0
        }
        return jobs[head...].map(\.job)
    }

    private func loop() {
        pthread_mutex_lock(mutex)
        while true {
            while head == jobs.count {
                idle += 1
                var waited: Int32 = 0
                if threads - blocking > width {
                    var deadline = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &deadline)
                    deadline.tv_sec += spareLifetime
                    waited = pthread_cond_timedwait(condition, mutex, &deadline)
                } else {
                    pthread_cond_wait(condition, mutex)
                }
                idle -= 1
                if waited == ETIMEDOUT && head == jobs.count && threads - blocking > width {
                    threads -= 1
                    pthread_mutex_unlock(mutex)
                    return
                }
            }
            let (job, mayBlock) = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            var start = false
            if mayBlock {
                blocking += 1
                start = reserveThread(for: false)
            }
            pthread_mutex_unlock(mutex)
            if start { startThread() }
            job()
            pthread_mutex_lock(mutex)
            if mayBlock { blocking -= 1 }
        }
    }
}
