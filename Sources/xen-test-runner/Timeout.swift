import Synchronization

/// Runs `body`, failing with `what` if it has not finished after `seconds`. The body is cancelled then but
/// not waited for: a body stuck in an uncancellable blocking call (I/O on a dead device) must not hold the
/// check. Checks use this around every wait on the real system so one lost event fails one check.
func within<T: Sendable>(
    _ seconds: Int, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let gate = ResumeOnce<T>()
    return try await withCheckedThrowingContinuation { continuation in
        gate.arm(continuation)
        let work = Task {
            do { gate.resume(.success(try await body())) } catch { gate.resume(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: .seconds(seconds))
            if gate.resume(.failure(CheckFailure("timed out after \(seconds)s: \(what)"))) { work.cancel() }
        }
    }
}

/// A continuation resumed by whichever side finishes first.
private final class ResumeOnce<T: Sendable>: Sendable {
    private let slot = Mutex<CheckedContinuation<T, any Error>?>(nil)

    func arm(_ continuation: CheckedContinuation<T, any Error>) { slot.withLock { $0 = continuation } }

    @discardableResult
    func resume(_ result: Result<T, any Error>) -> Bool {
        guard
            let continuation = slot.withLock({ slot in
                defer { slot = nil }; return slot
            })
        else { return false }
        continuation.resume(with: result)
        return true
    }
}
