/// Runs `body`, giving up after `limit`: nil when the time ran out first (`body` is then cancelled, and
/// awaited, before this returns).
///
/// OCaml: `Lwt.pick [ body; Time.sleep_ns limit >|= fun () -> None ]`
public func withDeadline<T: Sendable>(
    _ limit: Duration, _ body: @escaping @Sendable () async throws -> T
) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { return nil }
        return first
    }
}
