import XenCore

/// A wait that never ends fails the test after `seconds` instead of hanging the whole run (the body is
/// cancelled and left behind; see `withTimeLimit`).
struct HangBoundExceeded: Error, CustomStringConvertible {
    let description: String
}

func hangBound<T: Sendable>(
    _ what: String, seconds: Int = 120, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withTimeLimit(
        .seconds(seconds), timeout: { HangBoundExceeded(description: "\(what): no end after \(seconds) s") }, body)
}
