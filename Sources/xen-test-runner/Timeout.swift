/// Runs `body`, failing with `what` if it has not finished after `seconds`. The body is cancelled then;
/// checks use this around every wait on the real system so one lost event fails one check, not the run.
func within<T: Sendable>(
    _ seconds: Int, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else {
            throw CheckFailure("timed out after \(seconds)s: \(what)")
        }
        return value
    }
}
