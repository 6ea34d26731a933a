import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A few OS threads that run blocking system calls (pread, pwrite, fsync) so they never sit on Swift's
/// cooperative pool. Jobs run in FIFO order; the caller's continuation is resumed from the thread.
///
/// `@unchecked Sendable`: every access to `jobs`/`head` happens with `mutex` held; `threads` is written
/// only in `init`.
package final class BlockingIOThreads: @unchecked Sendable {
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    /// Threads actually started (set once in `init`).
    private var threads = 0
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// Shared by every file-backed device in the process.
    package static let shared = BlockingIOThreads(count: 4)

    init(count: Int) {
        condition = .allocate(capacity: 1)
        mutex = .allocate(capacity: 1)
        pthread_cond_init(condition, nil)
        pthread_mutex_init(mutex, nil)
        for _ in 0..<count where DetachedThread.spawn({ [self] in loop() }) == 0 { threads += 1 }
    }

    /// Runs `job` on a pool thread and returns its result.
    package func run<T: Sendable, E: Error>(_ job: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            submit {
                do throws(E) { continuation.resume(returning: .success(try job())) } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    private func submit(_ job: @escaping @Sendable () -> Void) {
        // No thread could be started (resource exhaustion): run the job here rather than never.
        guard threads > 0 else { return job() }
        pthread_mutex_lock(mutex)
        jobs.append(job)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    private func loop() {
        while true {
            pthread_mutex_lock(mutex)
            while head == jobs.count { pthread_cond_wait(condition, mutex) }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            pthread_mutex_unlock(mutex)
            job()
        }
    }
}
