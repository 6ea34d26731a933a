import XenCore

/// Runs `body`, failing with `what` if it has not finished after `seconds`. The body is cancelled then but
/// not waited for: a body stuck in an uncancellable blocking call (I/O on a dead device) must not hold the
/// check. Checks use this around every wait on the real system so one lost event fails one check.
func within<T: Sendable>(
    _ seconds: Int, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withTimeLimit(.seconds(seconds), timeout: { CheckFailure("timed out after \(seconds)s: \(what)") }, body)
}
