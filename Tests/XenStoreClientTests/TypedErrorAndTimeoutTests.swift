import Synchronization
import Testing
import XenCore
import XenStoreClient
import XenStoreServer

/// Typed errors without annotations where Swift allows it, the typed transaction form, the Swift names'
/// deprecated OCaml aliases, cancellation of transaction retries, and `wait(timeout:)`.
@Suite struct TypedErrorAndTimeoutTests {
    @Test(arguments: Via.allCases)
    func immediateHandleKeepsTheTypedErrorWithoutAnnotation(via: Via) async throws {
        try await withClient(via) { _, client, _ in
            #expect(await Self.errorReadingAMissingNode(client) == .noEntry(path: "/missing", op: .read))
            try await client.immediateHandle.write("/kept", "1")
            #expect(try await client.immediate { try await $0.read("/kept") } == "1")
        }
    }

    @Test(arguments: Via.allCases)
    func annotatedTransactionThrowsTypedXenStoreError(via: Via) async throws {
        try await withClient(via) { rig, client, _ in
            #expect(await Self.errorOfAFailingTransaction(client) == .noEntry(path: "/t/missing", op: .read))
            #expect(rig.server.value(at: "/t/a") == nil)  // aborted
            let value = try await client.transaction { (h) async throws(XenStoreError) -> String in
                try await h.write("/t/b", "2")
                return try await h.read("/t/b")
            }
            #expect(value == "2")
        }
    }

    /// A conflict after the task was cancelled is not retried: the typed form throws the conflict at once.
    @Test(arguments: Via.allCases)
    func cancelledTransactionIsNotRetriedAfterAConflict(via: Via) async throws {
        try await withClient(via) { rig, client, _ in
            let (other, _) = try rig.client()
            try await client.immediateHandle.write("/c/value", "0")
            let runs = Counter()
            let outcome = await Task { () async -> XenStoreError? in
                do throws(XenStoreError) {
                    try await client.transaction { (h) async throws(XenStoreError) in
                        runs.increment()
                        _ = try await h.read("/c/value")
                        try await h.write("/c/value", "mine")
                        try await other.immediateHandle.write("/c/value", "theirs")  // makes the commit conflict
                        withUnsafeCurrentTask { $0?.cancel() }
                    }
                    return nil
                } catch {
                    return error
                }
            }.value
            #expect(outcome == .transactionConflict(attempts: 1))
            #expect(runs.value == 1)
            #expect(rig.server.value(at: "/c/value") == Array("theirs".utf8))
            await other.close()
        }
    }

    @Test(arguments: Via.allCases)
    func waitTimesOutWithATypedErrorAndRemovesItsWatches(via: Via) async throws {
        try await withClient(via) { _, waiter, counting in
            let limit = Duration.milliseconds(50)
            await #expect(throws: XenStoreError.timedOut(after: limit)) {
                try await waiter.wait(timeout: limit) { h in
                    _ = try? await h.read("/never/there")
                    throw XenStoreError.again
                }
            }
            #expect(counting.watchCount == 0)
            // A condition that holds at once returns before any limit; the connection is still fine.
            try await waiter.immediateHandle.write("/now", "yes")
            #expect(try await waiter.wait(timeout: limit) { try await $0.read("/now") } == "yes")
        }
    }

    @Test(arguments: Via.allCases)
    func deprecatedOCamlNamesForwardToTheSwiftNames(via: Via) async throws {
        try await withClient(via) { rig, client, _ in
            try await Self.ocamlSpelledCalls(client.immediateHandle)
            #expect(rig.server.value(at: "/o/dir") == [])
            #expect(rig.server.value(at: "/o/gone") == nil)
        }
    }

    /// The error of reading a missing node. A plain `do` takes the type its body throws, so `return error`
    /// compiles only because `immediateHandle.read` throws `XenStoreError` itself: no annotation anywhere.
    private static func errorReadingAMissingNode(_ client: XenStoreClient) async -> XenStoreError? {
        do {
            _ = try await client.immediateHandle.read("/missing")
            return nil
        } catch {
            return error
        }
    }

    /// The error of a transaction whose (annotated) body fails; as above, `return error` compiles only
    /// because the typed form of `transaction` was chosen and throws `XenStoreError`.
    private static func errorOfAFailingTransaction(_ client: XenStoreClient) async -> XenStoreError? {
        do {
            try await client.transaction { (h) async throws(XenStoreError) in
                try await h.write("/t/a", "1")
                _ = try await h.read("/t/missing")
            }
            return nil
        } catch {
            return error
        }
    }

    /// Runs `body` with a fresh rig and one client of it, then closes the client and shuts the rig down, also
    /// when `body` throws.
    private func withClient(
        _ via: Via, _ body: (ServerRig, XenStoreClient, CountingTransport) async throws -> Void
    ) async throws {
        let rig = try await ServerRig(via)
        let (client, counting) = try rig.client()
        var failure: (any Error)?
        do { try await body(rig, client, counting) } catch { failure = error }
        await client.close()
        await rig.shutDown()
        if let failure { throw failure }
    }

    /// Calls every alias through ``OCamlSpelledHandle``: a call through a protocol requirement is not a use
    /// of the deprecated witness, so the suite builds with warnings as errors.
    private static func ocamlSpelledCalls(_ h: some OCamlSpelledHandle) async throws(XenStoreError) {
        try await h.mkdir("/o/dir")
        try await h.write("/o/gone", "x")
        try await h.rm("/o/gone")
        let permissions = XenStorePermissions(owner: 5, others: .read)
        try await h.setperms("/o/dir", permissions)
        #expect(try await h.getperms("/o/dir") == permissions)
        #expect(try await h.getDomainPath(7) == "/local/domain/7")
    }
}

/// The OCaml spellings `XenStoreHandle` keeps as deprecated aliases.
protocol OCamlSpelledHandle {
    func mkdir(_ path: String) async throws(XenStoreError)
    func rm(_ path: String) async throws(XenStoreError)
    func setperms(_ path: String, _ permissions: XenStorePermissions) async throws(XenStoreError)
    func getperms(_ path: String) async throws(XenStoreError) -> XenStorePermissions
    func getDomainPath(_ domain: DomainID) async throws(XenStoreError) -> String
    func write(_ path: String, _ value: String) async throws(XenStoreError)
}

extension XenStoreHandle: OCamlSpelledHandle {}

/// A lock-protected counter for closures that run more than once.
final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
