import XenCore

/// How `XenStoreClient.transaction` retries a transaction that conflicts (`EAGAIN` at commit, or from an
/// operation inside it): at most `maxAttempts` runs of the body, sleeping a jittered, exponentially growing
/// delay between runs so that contending clients spread out instead of colliding again in lock step.
/// When the attempts are used up the transaction throws `XenStoreError.transactionConflict(attempts:)`.
///
/// OCaml: none (`Xs_client_lwt.S.transaction` retries immediately and forever)
public struct XenStoreRetryPolicy: Hashable, Sendable {
    /// Runs of the body before giving up (at least 1).
    public var maxAttempts: Int
    /// The delay cap after the first conflict; doubled after each further conflict.
    public var initialBackoff: Duration
    /// The largest delay cap.
    public var maxBackoff: Duration

    /// A policy. `maxAttempts` below 1 counts as 1.
    ///
    /// OCaml: none
    public init(maxAttempts: Int, initialBackoff: Duration, maxBackoff: Duration) {
        self.maxAttempts = max(1, maxAttempts)
        self.initialBackoff = initialBackoff
        self.maxBackoff = max(initialBackoff, maxBackoff)
    }

    /// 100 attempts, 50 µs doubling to 20 ms: generous enough for dozens of clients contending on one node.
    public static let `default` = XenStoreRetryPolicy(
        maxAttempts: 100, initialBackoff: .microseconds(50), maxBackoff: .milliseconds(20))

    /// One attempt: a conflict is thrown as `transactionConflict(attempts: 1)` at once.
    public static let noRetry = XenStoreRetryPolicy(maxAttempts: 1, initialBackoff: .zero, maxBackoff: .zero)

    /// The delay before attempt `attempt + 1` after `attempt` conflicts ("full jitter": uniform between zero
    /// and the capped exponential), drawn from `generator`.
    ///
    /// OCaml: none
    public func backoff(afterAttempt attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let capNanoseconds = Self.nanoseconds(maxBackoff)
        var cap = Self.nanoseconds(initialBackoff)
        var step = 1
        while step < attempt && cap < capNanoseconds {
            cap = cap > capNanoseconds / 2 ? capNanoseconds : cap * 2
            step += 1
        }
        cap = min(cap, capNanoseconds)
        guard cap > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...cap, using: &generator))
    }

    /// Whole nanoseconds, 0 for a negative duration.
    private static func nanoseconds(_ duration: Duration) -> Int64 { max(0, duration.nanoseconds) }
}
