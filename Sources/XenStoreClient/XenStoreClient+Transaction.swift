extension XenStoreClient {
    // MARK: - Transactions

    /// Runs `body` inside a transaction: `TRANSACTION_START`, the body, `TRANSACTION_END T`. On a conflict
    /// (`EAGAIN` at commit, or thrown out of the body by an operation) the transaction is aborted and the body
    /// run again after a jittered backoff, up to `retryPolicy.maxAttempts` runs, then
    /// `XenStoreError.transactionConflict` is thrown. A `TRANSACTION_START` refused for quota (too many open
    /// transactions on the connection) is retried the same way. If the body throws anything else,
    /// `TRANSACTION_END F` is sent (ocaml-xenstore leaks the transaction) and the error is rethrown.
    /// Cancelling the task stops the retrying: a conflict after cancellation is thrown at once
    /// (`.transactionConflict`, or `.quota` for a refused start) instead of being retried.
    ///
    /// This form takes any body. A body annotated `{ (h) async throws(XenStoreError) in … }` picks the typed
    /// form, which throws `XenStoreError` only; Swift 6 infers an unannotated closure as throwing `any Error`.
    ///
    /// OCaml: `Xs_client_lwt.S.transaction`
    public func transaction<T>(
        retryPolicy: XenStoreRetryPolicy? = nil,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (XenStoreHandle) async throws -> T
    ) async throws -> T {
        try await runTransaction(retryPolicy ?? self.retryPolicy, wrap: { $0 }, body)
    }

    /// The typed form of `transaction(retryPolicy:isolation:_:)`: the body and the transaction throw
    /// `XenStoreError` only, so `catch` sees it typed. Chosen for a body annotated `throws(XenStoreError)`.
    ///
    /// OCaml: `Xs_client_lwt.S.transaction`
    public func transaction<T>(
        retryPolicy: XenStoreRetryPolicy? = nil,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (XenStoreHandle) async throws(XenStoreError) -> T
    ) async throws(XenStoreError) -> T {
        try await runTransaction(retryPolicy ?? self.retryPolicy, wrap: { $0 }, body)
    }

    /// The one transaction loop behind both forms: `wrap` turns the loop's own `XenStoreError`s into the
    /// body's error type.
    private func runTransaction<T, E: Error>(
        _ policy: XenStoreRetryPolicy,
        isolation: isolated (any Actor)? = #isolation,
        wrap: (XenStoreError) -> E,
        _ body: (XenStoreHandle) async throws(E) -> T
    ) async throws(E) -> T {
        var generator = SystemRandomNumberGenerator()
        var attempt = 0
        // Sleeps the backoff after `attempt` conflicts; false when the task is cancelled (stop retrying).
        func backOff() async -> Bool {
            guard attempt < policy.maxAttempts, !Task.isCancelled else { return false }
            try? await Task.sleep(for: policy.backoff(afterAttempt: attempt, using: &generator))
            return !Task.isCancelled
        }
        while true {
            attempt += 1
            let id: UInt32
            do throws(XenStoreError) {
                id = try await startTransaction()
            } catch {
                // Many tasks sharing one connection can exceed the server's per-connection transaction quota
                // (C xenstored: 10); that clears as the others commit, so it is retried like a conflict.
                guard case .quota = error, await backOff() else { throw wrap(error) }
                continue
            }
            let handle = XenStoreHandle(client: self, transactionID: id, recorder: nil)
            let value: T
            do throws(E) {
                value = try await body(handle)
            } catch {
                try? await handle.endTransaction(commit: false)
                guard (error as? XenStoreError)?.isConflict == true else { throw error }
                guard await backOff() else { throw wrap(.transactionConflict(attempts: attempt)) }
                continue
            }
            do throws(XenStoreError) {
                try await handle.endTransaction(commit: true)
                return value
            } catch {
                guard error.isConflict else { throw wrap(error) }
                guard await backOff() else { throw wrap(.transactionConflict(attempts: attempt)) }
            }
        }
    }

    private func startTransaction() async throws(XenStoreError) -> UInt32 {
        let payload = try await call(.transactionStart, transaction: 0, path: "", payload: [0])
        let text = WirePayload.strings(payload).first ?? ""
        guard let id = UInt32(text), id != 0 else {
            throw .malformedReply(path: "", op: .transactionStart, reason: "transaction id \"\(text)\"")
        }
        return id
    }
}
