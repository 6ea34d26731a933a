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
