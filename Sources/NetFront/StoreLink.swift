import NetworkDevice
import XenCore
import Xenbus

/// The frontend's xenstore calls, with failures turned into ``NetFrontError`` carrying the path.
struct StoreLink: Sendable {
    let store: any XenbusStore

    private func run<T>(_ path: String, _ body: () async throws -> T) async throws(NetFrontError) -> T {
        do { return try await body() } catch let error as NetFrontError { throw error } catch {
            throw .xenstore(path: path, underlying: error)
        }
    }

    func read(_ path: String) async throws(NetFrontError) -> String? {
        try await run(path) { try await store.read(path) }
    }

    func readKeys(_ names: [String], in dir: String) async throws(NetFrontError) -> [String: String] {
        try await run(dir) { try await store.readKeys(names, in: dir) }
    }

    func write(_ pairs: [(path: String, value: String)]) async throws(NetFrontError) {
        try await run(pairs.first?.path ?? "") { try await store.write(pairs) }
    }

    func state(of dir: String) async throws(NetFrontError) -> XenbusState? {
        try await run(dir) { try await store.state(of: dir) }
    }

    /// Waits until `dir`'s state satisfies `accept` or the directory goes (nil).
    func waitForState(
        of dir: String, _ accept: @escaping @Sendable (XenbusState) -> Bool
    ) async throws(NetFrontError) -> XenbusState? {
        try await run(dir) { try await store.waitForState(of: dir, orGone: true, accept) }
    }

    /// The same, giving up after `limit` (then nil too).
    func waitForState(
        of dir: String, within limit: Duration, _ accept: @escaping @Sendable (XenbusState) -> Bool
    ) async throws(NetFrontError) -> XenbusState? {
        let store = store
        return try await run(dir) {
            try await withDeadline(limit) { try await store.waitForState(of: dir, orGone: true, accept) } ?? nil
        }
    }
}
