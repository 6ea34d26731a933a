import BlkifProtocol
import XenCore

/// An in-memory XenbusStore for the handshake tests that do not need the xenstore wire protocol: a dictionary,
/// a change log and waiters woken by writes under their paths.
actor MemoryXenbusStore: XenbusStore {
    private var values: [String: String] = [:]
    private var permissions: [String: (DomainID, [DomainID])] = [:]
    private var version = 0
    private var log: [(Int, String)] = []
    private var waiters: [(paths: [String], continuation: CheckedContinuation<Void, Never>)] = []

    func read(_ path: String) async throws -> String? { values[path] }

    func write(_ pairs: [(path: String, value: String)]) async throws {
        for (path, value) in pairs { values[path] = value }
        changed(pairs.map(\.path))
    }

    func remove(_ path: String) async throws {
        let doomed = values.keys.filter { $0 == path || $0.hasPrefix(path + "/") }
        for key in doomed { values[key] = nil }
        changed([path])
    }

    func setPermissions(_ path: String, owner: DomainID, readers: [DomainID]) async throws {
        permissions[path] = (owner, readers)
    }

    func owner(of path: String) -> DomainID? { permissions[path]?.0 }

    nonisolated func wait<T: Sendable>(
        watching paths: [String], until check: @escaping @Sendable () async throws -> T?
    ) async throws -> T {
        while true {
            let seen = await currentVersion()
            if let value = try await check() { return value }
            await waitForChange(paths, after: seen)
        }
    }

    private func currentVersion() -> Int { version }

    private static func touches(_ changed: String, _ watched: [String]) -> Bool {
        watched.contains { changed == $0 || changed.hasPrefix($0 + "/") || $0.hasPrefix(changed + "/") }
    }

    private func waitForChange(_ paths: [String], after seen: Int) async {
        if log.contains(where: { $0.0 > seen && Self.touches($0.1, paths) }) { return }
        await withCheckedContinuation { waiters.append((paths, $0)) }
    }

    private func changed(_ paths: [String]) {
        version += 1
        for path in paths { log.append((version, path)) }
        var remaining: [(paths: [String], continuation: CheckedContinuation<Void, Never>)] = []
        for waiter in waiters {
            if paths.contains(where: { Self.touches($0, waiter.paths) }) {
                waiter.continuation.resume()
            } else {
                remaining.append(waiter)
            }
        }
        waiters = remaining
    }
}
