#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Runs a blocking C call on a thread of its own and resumes the caller with its result, so libxenstore's
/// blocking requests never occupy the cooperative pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { (continuation: CheckedContinuation<T, Never>) in
        let job = BlockingJob { continuation.resume(returning: body()) }
        let context = Unmanaged.passRetained(job).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, nil,
            { context in
                guard let context else { return nil }
                Unmanaged<BlockingJob>.fromOpaque(context).takeRetainedValue().run()
                return nil
            }, context)
        if rc == 0 {
            pthread_detach(thread)
        } else {
            // No thread to spare: run inline rather than lose the call.
            Unmanaged<BlockingJob>.fromOpaque(context).takeRetainedValue().run()
        }
    }
}

private final class BlockingJob: @unchecked Sendable {
    // @unchecked: handed to exactly one thread.
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}
