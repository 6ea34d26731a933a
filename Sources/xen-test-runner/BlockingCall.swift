import XenCore

/// Runs a blocking C call on XenCore's `BlockingPool` (as a call that may block without bound: a guest's
/// console, a kernel socket, libxenstore waiting for a daemon) and resumes the caller with its result, so
/// blocking calls never occupy the cooperative pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await BlockingPool.shared.run(mayBlockIndefinitely: true, body)
}
