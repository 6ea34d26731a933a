import Synchronization

/// Runs `body`, throwing `timeout()` if it has not finished after `limit`. The body is cancelled then but
/// not waited for: a body stuck in an uncancellable wait (a blocking call, another task's `value`) must not
/// hold its caller. For test rigs and checks that must fail instead of hanging.
///
/// OCaml: `Lwt_unix.with_timeout` (which cancels the body and returns at once too)
package func withTimeLimit<T: Sendable>(
    _ limit: Duration, timeout: @escaping @Sendable () -> any Error,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let gate = FirstOutcome<T>()
    return try await withCheckedThrowingContinuation { continuation in
        gate.arm(continuation)
        let work = Task {
            do { gate.resume(.success(try await body())) } catch { gate.resume(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            if gate.resume(.failure(timeout())) { work.cancel() }
        }
    }
}

/// A continuation resumed by whichever side finishes first.
private final class FirstOutcome<T: Sendable>: Sendable {
    private let slot = Mutex<CheckedContinuation<T, any Error>?>(nil)

    func arm(_ continuation: CheckedContinuation<T, any Error>) { slot.withLock { $0 = continuation } }

    @discardableResult
    func resume(_ result: Result<T, any Error>) -> Bool {
        guard
            let continuation = slot.withLock({ slot in
                defer { slot = nil }
                return slot
            })
        else { return false }
        continuation.resume(with: result)
        return true
    }
}
