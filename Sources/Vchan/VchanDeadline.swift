/// Runs `body`; with a `limit` that runs out first, cancels it and throws ``VchanError/timedOut(operation:)``
/// naming `what`.
///
/// OCaml: none (ocaml-vchan waits without limit)
func withDeadline<T: Sendable>(
    _ limit: Duration?, _ what: String, _ body: @escaping @Sendable () async throws(VchanError) -> T
) async throws(VchanError) -> T {
    guard let limit else { return try await body() }
    let first = await withTaskGroup(of: Result<T, VchanError>?.self) { group in
        group.addTask {
            do throws(VchanError) { return .success(try await body()) } catch { return .failure(error) }
        }
        group.addTask {
            do { try await Task.sleep(for: limit) } catch { return nil }
            return .failure(.timedOut(operation: what))
        }
        var outcome: Result<T, VchanError> = .failure(.cancelled)
        while let next = await group.next() {
            guard let next else { continue }
            outcome = next
            group.cancelAll()
            break
        }
        return outcome
    }
    return try first.get()
}
