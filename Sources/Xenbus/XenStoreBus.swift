public import XenCore
public import XenStoreClient
import XenStoreProtocol

/// The `XenbusStore` seam over a real `XenStoreClient` (xenstored, the xenbus device, or an in-process
/// `XenStoreServer` connection). The block and network drivers take it.
///
/// OCaml: the `Xs` module Blkfront/Blkback are applied to (`Xs_client_lwt.Client(Xs_transport_unix)`)
public struct XenStoreBus: XenbusStore {
    /// The client requests go through.
    public let client: XenStoreClient

    /// Wraps `client`.
    public init(client: XenStoreClient) { self.client = client }

    /// The client's identity: every `XenStoreBus` over one client is the same connection.
    ///
    /// OCaml: none (a unikernel has one xenstore)
    public var connectionIdentity: ObjectIdentifier? { ObjectIdentifier(client) }

    /// OCaml: `Xs.(immediate client (fun h -> read h path))`, `Enoent` → `None`
    public func read(_ path: String) async throws -> String? {
        do {
            return try await client.immediate { handle async throws(XenStoreError) -> String in
                try await handle.read(path)
            }
        } catch .noEntry {
            return nil
        }
    }

    /// OCaml: `Xs.(transaction client (fun t -> List.iter (write t) pairs))`
    public func write(_ pairs: [(path: String, value: String)]) async throws {
        if pairs.count == 1, let pair = pairs.first {
            try await client.immediate { handle async throws(XenStoreError) in
                try await handle.write(pair.path, pair.value)
            }
            return
        }
        try await client.transaction { handle in
            for (path, value) in pairs { try await handle.write(path, value) }
        }
    }

    /// OCaml: `Xs.rm` (ENOENT ignored)
    public func remove(_ path: String) async throws {
        do {
            try await client.immediate { handle async throws(XenStoreError) in try await handle.remove(path) }
        } catch .noEntry {
            return
        }
    }

    /// OCaml: `Xs.setperms path { owner; other = NONE; acl = readers with READ }`
    public func setPermissions(_ path: String, owner: DomainID, readers: [DomainID]) async throws {
        let permissions = Self.permissions(owner: owner, readers: readers)
        try await client.immediate { handle async throws(XenStoreError) in
            try await handle.setPermissions(path, to: permissions)
        }
    }

    /// `owner` owns, `readers` read, everyone else nothing.
    private static func permissions(owner: DomainID, readers: [DomainID]) -> XenStorePermissions {
        XenStorePermissions(owner: owner, others: .none, acl: readers.map { XenStorePermission(.read, $0) })
    }

    /// OCaml: `Xs.(immediate client (fun h -> directory h path))`, `Enoent` → `[]`
    public func directory(_ path: String) async throws -> [String] {
        do {
            return try await client.immediate { handle async throws(XenStoreError) -> [String] in
                try await handle.directory(path)
            }
        } catch .noEntry {
            return []
        }
    }

    /// OCaml: `Xs.(transaction client (fun t -> List.iter (fun n -> write t ...; setperms t ...) nodes))`
    public func write(_ nodes: [XenbusNode]) async throws {
        try await client.transaction { handle async throws(XenStoreError) in
            for node in nodes {
                try await handle.write(node.path, node.value)
                try await handle.setPermissions(
                    node.path, to: Self.permissions(owner: node.owner, readers: node.readers))
            }
        }
    }

    /// OCaml: `Xs.(transaction client (fun t -> if exists t path then write t path value))`
    public func writeIfPresent(_ path: String, _ value: String) async throws -> Bool {
        try await client.transaction { handle async throws(XenStoreError) -> Bool in
            guard try await handle.exists(path) else { return false }
            try await handle.write(path, value)
            return true
        }
    }

    /// Registers one `XenStoreClient.watches` sequence per path and merges their events; ending the stream
    /// (its consumer cancelled or gone) removes the watches.
    ///
    /// OCaml: none (`Xs_client_lwt` only has `wait`)
    public func watch(_ paths: [String]) async throws -> AsyncThrowingStream<String, any Error> {
        var registered: [XenStoreWatchEvents] = []
        do throws(XenStoreError) {
            for path in paths { registered.append(try await client.watches(path)) }
        } catch {
            for events in registered { events.cancel() }
            throw error
        }
        let sequences = registered
        let (stream, continuation) = AsyncThrowingStream<String, any Error>.makeStream()
        let pump = Task {
            await withTaskGroup(of: Void.self) { group in
                for events in sequences {
                    group.addTask {
                        do {
                            for try await event in events { continuation.yield(event.path) }
                        } catch {
                            continuation.finish(throwing: error)
                        }
                    }
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in
            pump.cancel()
            for events in sequences { events.cancel() }
        }
        return stream
    }

    /// Runs `check` under `XenStoreClient.wait`, first touching each of `paths` so the wait watches them.
    ///
    /// OCaml: `Xs.wait`
    public func wait<T: Sendable>(
        watching paths: [String], until check: @escaping @Sendable () async throws -> T?
    ) async throws -> T {
        try await client.wait { handle in
            for path in paths { _ = try? await handle.exists(path) }
            if let value = try await check() { return value }
            throw XenStoreError.again
        }
    }
}
