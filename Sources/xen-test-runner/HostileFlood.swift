import XenCore
import XenStoreClient

/// Step 4 of the hostile guest: as many xenstore requests as the daemon takes from an unprivileged domain —
/// an oversized value, new nodes, watches, transactions held open — each until the daemon refuses (its
/// quotas), then everything removed again. Runs inside the guest over the xenbus device, one request per
/// round trip (the device's rule), while dom0 keeps serving.
enum HostileFlood {
    static let nodeCap = 4000
    static let watchCap = 1000
    static let transactionTries = 16

    /// "big=E nodes=N/E watches=N/E transactions=N/E ms=T after=ok": how many of each the daemon took and
    /// its first refusal ("none" when the cap was reached without one).
    static func run(home: String, client: XenStoreClient) async throws -> String {
        let started = ContinuousClock.now
        let root = home + "/data/flood"
        // One word for the report line: the error's case (`quota`, `tooBig`, ...), else its text without spaces.
        func name(_ error: any Error) -> String {
            Mirror(reflecting: error).children.first?.label
                ?? "\(error)".split(separator: " ").joined(separator: "_")
        }
        func put(_ path: String, _ value: String) async throws {
            try await client.immediate { handle async throws(XenStoreError) in try await handle.write(path, value) }
        }

        var big = "none"
        do { try await put(home + "/data/flood-big", String(repeating: "b", count: 3000)) } catch { big = name(error) }

        var nodes = 0
        var nodesRefused = "none"
        let value = String(repeating: "v", count: 100)
        while nodes < nodeCap {
            do { try await put("\(root)/n\(nodes)", value) } catch {
                nodesRefused = name(error)
                break
            }
            nodes += 1
        }

        var watches = 0
        var watchesRefused = "none"
        while watches < watchCap {
            do {
                try await client.immediate { handle async throws(XenStoreError) in
                    try await handle.watch("\(root)/w\(watches)", token: "hw\(watches)")
                }
            } catch {
                watchesRefused = name(error)
                break
            }
            watches += 1
        }

        // Transactions held open together (each sleeps inside its body): the daemon's per-connection limit.
        let outcomes = await withTaskGroup(of: String?.self) { group in
            for index in 0..<transactionTries {
                group.addTask {
                    do {
                        try await client.transaction(retryPolicy: .noRetry) { handle in
                            _ = try? await handle.exists("\(root)/n\(index)")
                            try await Task.sleep(for: .seconds(3))
                        }
                        return nil
                    } catch { return name(error) }
                }
            }
            var refused: [String] = []
            for await outcome in group { if let outcome { refused.append(outcome) } }
            return refused
        }

        // Clean up: every watch, every node; then the connection must still answer.
        for index in 0..<watches {
            try? await client.immediate { handle async throws(XenStoreError) in
                try await handle.unwatch("\(root)/w\(index)", token: "hw\(index)")
            }
        }
        try await client.immediate { handle async throws(XenStoreError) in try await handle.remove(root) }
        try? await client.immediate { handle async throws(XenStoreError) in
            try await handle.remove(home + "/data/flood-big")
        }
        let name = try await client.immediate { handle async throws(XenStoreError) in
            try await handle.read(home + "/name")
        }
        let elapsed = (ContinuousClock.now - started).components
        return "big=\(big) nodes=\(nodes)/\(nodesRefused) watches=\(watches)/\(watchesRefused) "
            + "transactions=\(transactionTries - outcomes.count)/\(outcomes.first ?? "none") "
            + "ms=\(elapsed.seconds * 1000 + elapsed.attoseconds / 1_000_000_000_000_000) after=\(name.isEmpty ? "empty" : "ok")"
    }
}
