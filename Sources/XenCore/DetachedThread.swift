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
            return status
        }
        pthread_detach(thread)
        return 0
    }
}
