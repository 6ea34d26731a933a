import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A few OS threads that run blocking system calls (pread, pwrite, fsync) so they never sit on Swift's
/// cooperative pool. Jobs are taken in FIFO order; the caller's continuation is resumed from the thread.
final class BlockingIOThreads: Sendable {
    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var head = 0
        var stopping = false
    }

    private let state = Mutex(State())
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// Shared by every file-backed device in the process.
    static let shared = BlockingIOThreads(count: 4)

    init(count: Int) {
        condition = .allocate(capacity: 1)
        mutex = .allocate(capacity: 1)
        pthread_cond_init(condition, nil)
        pthread_mutex_init(mutex, nil)
        for _ in 0..<count {
            let box = Unmanaged.passRetained(self).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(
                &thread, nil,
                { raw in
                    let pool = Unmanaged<BlockingIOThreads>.fromOpaque(raw!).takeRetainedValue()
                    pool.loop()
                    return nil
                }, box)
            precondition(rc == 0, "pthread_create failed: \(rc)")
            pthread_detach(thread)
        }
    }

    /// Runs `job` on a pool thread and returns its result.
    func run<T: Sendable, E: Error>(_ job: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
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
        pthread_mutex_lock(mutex)
        state.withLock { $0.jobs.append(job) }
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    private func loop() {
        while true {
            pthread_mutex_lock(mutex)
            var job: (@Sendable () -> Void)?
            while job == nil {
                job = state.withLock { state -> (@Sendable () -> Void)? in
                    guard state.head < state.jobs.count else { return nil }
                    let next = state.jobs[state.head]
                    state.head += 1
                    if state.head > 64, state.head * 2 > state.jobs.count {
                        state.jobs.removeFirst(state.head)
                        state.head = 0
                    }
                    return next
                }
                if job == nil { pthread_cond_wait(condition, mutex) }
            }
            pthread_mutex_unlock(mutex)
            job?()
        }
    }
}
