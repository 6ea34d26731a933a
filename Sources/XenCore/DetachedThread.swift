#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Starts detached POSIX threads: every thread SwiftXen creates is started here (I/O threads, and
/// `BlockingPool`'s threads for blocking calls), since the cooperative pool must never block. One helper for
/// every target of the package (no CXen needed).
package enum DetachedThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Runs `body` on a new detached thread; returns 0, or `pthread_create`'s error number when no thread
    /// could be started (then `body` never runs).
    package static func spawn(_ body: @escaping @Sendable () -> Void) -> Int32 {
        switch create(body) {
        case .success(let thread):
            pthread_detach(thread)
            return 0
        case .failure(let error):
            return error.errno
        }
    }

    /// The one `pthread_create` of the package: a thread running `body`, joinable until the caller detaches
    /// or joins it.
    fileprivate static func create(_ body: @escaping @Sendable () -> Void) -> Result<pthread_t, ThreadStartError> {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread, nil,
            { context in
                guard let context else { return nil }
                Unmanaged<Box>.fromOpaque(context).takeRetainedValue().body()
                return nil
            }, box)
        guard status == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            return .failure(ThreadStartError(errno: status))
        }
        return .success(thread)
    }
}

/// No thread could be started: `pthread_create`'s error number.
package struct ThreadStartError: Error, Equatable {
    /// The error number `pthread_create` returned.
    package let errno: Int32
}

/// A thread whose owner waits for its end: for an I/O thread that uses something the owner releases
/// (XenEventChannel's poll thread reads the evtchn handle, which `close` frees only after `join`). Started by
/// the same code as ``DetachedThread``.
package struct JoinableThread: Sendable {
    private let thread: pthread_t

    /// Runs `body` on a new thread, which the caller must `join` once.
    package init(_ body: @escaping @Sendable () -> Void) throws(ThreadStartError) {
        thread = try DetachedThread.create(body).get()
    }

    /// Waits until the thread's `body` has returned.
    package func join() { pthread_join(thread, nil) }
}
