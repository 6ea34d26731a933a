/// Limits the server enforces, with C xenstored 4.17's defaults. Privileged connections (dom0) are exempt,
/// as in xenstored.
///
/// OCaml: oxenstored `Quota.t` / C xenstored's `-E -S -W -t -A` options
public struct XenStoreQuotas: Sendable, Hashable {
    /// Nodes a domain may own (`-E`, 1000). Exceeding it answers `ENOSPC`; a transaction's new nodes are
    /// counted again at its commit against the live store, which must stay below it (C xenstored's `>=`).
    public var nodesPerDomain: Int
    /// Size limit of every node record an unprivileged domain writes, measured as C xenstored stores it
    /// (24-byte header, 8 bytes per permission entry, value, child names with their NULs; the parent that
    /// gains a child included): a record of this size or more answers `ENOSPC` (`-S`, 2048).
    public var nodeSize: Int
    /// Watches per connection (`-W`, 128): `E2BIG`.
    public var watchesPerConnection: Int
    /// Open transactions per connection (`-t`, 10): `ENOSPC`.
    public var transactionsPerConnection: Int
    /// Permission entries per node beyond the owner (`-A`, 5): `ENOSPC`.
    public var permissionsPerNode: Int

    /// The limits; defaults as C xenstored 4.17.
    ///
    /// OCaml: oxenstored `Quota.create`
    public init(
        nodesPerDomain: Int = 1000, nodeSize: Int = 2048, watchesPerConnection: Int = 128,
        transactionsPerConnection: Int = 10, permissionsPerNode: Int = 5
    ) {
        self.nodesPerDomain = nodesPerDomain
        self.nodeSize = nodeSize
        self.watchesPerConnection = watchesPerConnection
        self.transactionsPerConnection = transactionsPerConnection
        self.permissionsPerNode = permissionsPerNode
    }
}

/// Identifies one connection to a `XenStoreServer`.
///
/// OCaml: none (xenstored's `struct connection *`)
public struct XenStoreConnectionID: Hashable, Sendable, CustomStringConvertible {
    /// A number unique within the server.
    public let rawValue: UInt64
    init(_ rawValue: UInt64) { self.rawValue = rawValue }
    /// `#<number>`.
    public var description: String { "#\(rawValue)" }
}
