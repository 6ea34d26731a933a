import XenCore

/// Runs a blocking C call on a thread of its own and resumes the caller with its result, so libxenstore's
/// blocking requests never occupy the cooperative pool.
func blocking<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await DetachedThread.run(body)
}
