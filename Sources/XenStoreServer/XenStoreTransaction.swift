import XenCore
import XenStoreProtocol

/// An open transaction: a snapshot of the tree, what was read from it, and the changes to replay at commit.
///
/// Conflicts follow C xenstored (since 4.9): a commit fails with `EAGAIN` iff a node the transaction *read*
/// (before writing it) changed in the live tree meanwhile. What "read" means is recorded per node: its
/// existence, its value and permissions, its list of children. As in C xenstored, writing a node (value or
/// permissions) reads it first, creating one reads the parent that gains it and removing one reads it and its
/// parent, so those conflict on any change (C xenstored also reads a removed node's subtree; this does not).
///
/// Quotas: C xenstored counts a transaction's change to each domain's nodes again at commit, against the
/// live store (`transaction_fix_domains`); `baseline` and `createdNode` let the commit do the same.
///
/// OCaml: oxenstored `Transaction.t`
struct XenStoreTransaction: Sendable {
    struct ReadRecord: Sendable {
        /// The node's identity when first seen (nil: absent).
        var identity: UInt64?
        /// Set if the value or permissions were read.
        var contentGeneration: UInt64?
        /// Set if the children were listed.
        var childrenGeneration: UInt64?
    }

    var tree: XenStoreTree
    var reads: [String: ReadRecord] = [:]
    var written: Set<String> = []
    var operations: [XenStoreTransactionOperation] = []
    /// Nodes per domain in the snapshot, to tell what the transaction changed.
    let baseline: [DomainID: Int]
    /// An unprivileged connection tried to create a node in it (C xenstored's `node_created`): only then
    /// does the commit check the node quota.
    var createdNode = false

    init(snapshot: XenStoreTree) {
        self.tree = snapshot
        self.baseline = snapshot.ownedNodes
    }

    /// How many nodes each domain gained (or lost) in this transaction; domains without change are left out.
    var ownedNodeChanges: [DomainID: Int] {
        var changes: [DomainID: Int] = [:]
        for domain in Set(tree.ownedNodes.keys).union(baseline.keys) {
            let change = tree.ownedNodes[domain, default: 0] - baseline[domain, default: 0]
            if change != 0 { changes[domain] = change }
        }
        return changes
    }

    mutating func noteRead(_ path: String, content: Bool, children: Bool) {
        guard !written.contains(path) else { return }
        let node = tree[path]
        var record = reads[path] ?? ReadRecord(identity: node?.identity)
        if content && record.contentGeneration == nil { record.contentGeneration = node?.contentGeneration ?? 0 }
        if children && record.childrenGeneration == nil { record.childrenGeneration = node?.childrenGeneration ?? 0 }
        reads[path] = record
    }

    mutating func record(_ operation: XenStoreTransactionOperation, paths: [String]) {
        operations.append(operation)
        written.formUnion(paths)
    }

    /// True if the live tree still matches everything this transaction read.
    func isConsistent(with live: XenStoreTree) -> Bool {
        for (path, record) in reads {
            let node = live[path]
            guard node?.identity == record.identity else { return false }
            if let content = record.contentGeneration, let node, node.contentGeneration != content { return false }
            if let children = record.childrenGeneration, let node, node.childrenGeneration != children {
                return false
            }
        }
        return true
    }
}

// MARK: - Transactions, watches and domains in the state machine

extension XenStoreState {
    mutating func noteRead(_ context: OperationContext, _ path: String, content: Bool, children: Bool) {
        guard context.transaction != 0 else { return }
        connections[context.connection]?.transactions[context.transaction]?.noteRead(
            path, content: content, children: children)
    }

    mutating func startTransaction(_ context: OperationContext) throws(StoreFailure) -> UInt32 {
        guard let open = connections[context.connection]?.transactions.count,
            var tid = connections[context.connection]?.nextTransactionID
        else { throw StoreFailure(.einval) }
        // As C xenstored's do_transaction_start: only unprivileged connections are limited.
        guard isPrivileged(context.domain) || open < quotas.transactionsPerConnection else {
            throw StoreFailure(.enospc)
        }
        while tid == 0 || connections[context.connection]?.transactions[tid] != nil { tid &+= 1 }
        connections[context.connection]!.nextTransactionID = tid &+ 1
        connections[context.connection]!.transactions[tid] = XenStoreTransaction(snapshot: tree)
        return tid
    }

    mutating func endTransaction(_ tid: UInt32, commit: Bool, _ context: OperationContext) throws(StoreFailure) {
        guard let transaction = connections[context.connection]?.transactions.removeValue(forKey: tid) else {
            throw StoreFailure(.enoent)
        }
        guard commit else { return }
        // C xenstored's do_transaction_end: the quota first, then conflicts. Each domain's nodes after the
        // commit (live count + the transaction's change) must stay below the quota (`>=` fails, as there).
        if transaction.createdNode && !isPrivileged(context.domain) {
            for (domain, change) in transaction.ownedNodeChanges where !isPrivileged(domain) {
                if tree.ownedNodes[domain, default: 0] + change >= quotas.nodesPerDomain {
                    throw StoreFailure(.enospc)
                }
            }
        }
        guard transaction.isConsistent(with: tree) else { throw StoreFailure(.eagain) }
        for operation in transaction.operations {
            switch operation {
            case .write(let path, let value, let owner):
                tree.write(path, value: value, owner: owner, generation: &generation)
                fireWatches(for: operation, removed: [])
            case .mkdir(let path, let owner):
                if !tree.create(path, owner: owner, generation: &generation).isEmpty {
                    fireWatches(for: operation, removed: [])
                }
            case .rm(let path):
                let removed = tree.remove(path, generation: &generation)
                fireWatches(for: operation, removed: removed)
            case .setPermissions(let path, let permissions):
                guard tree[path] != nil else { continue }
                tree.setPermissions(path, permissions, generation: &generation)
                fireWatches(for: operation, removed: [])
            }
        }
    }

    // MARK: - Watches

    mutating func addWatch(_ path: String, token: String, _ context: OperationContext) throws(StoreFailure) {
        let absolute: String
        do {
            absolute = try XenStorePath.canonicalize(path, for: context.domain, allowSpecial: true)
        } catch {
            throw StoreFailure(.einval)
        }
        guard
            let (duplicate, count) = connections[context.connection].map({ connection in
                (connection.watches.contains { $0.absolute == absolute && $0.token == token }, connection.watches.count)
            })
        else { throw StoreFailure(.einval) }
        if duplicate { throw StoreFailure(.eexist) }
        if !isPrivileged(context.domain) && count >= quotas.watchesPerConnection {
            throw StoreFailure(.e2big)
        }
        let prefix = XenStorePath.isRelative(path) ? XenStorePath.domainPath(of: context.domain) + "/" : nil
        connections[context.connection]!.watches.append(
            XenStoreWatch(path: path, absolute: absolute, token: token, relativePrefix: prefix))
    }

    mutating func removeWatch(_ path: String, token: String, _ context: OperationContext) throws(StoreFailure) {
        let absolute: String
        do {
            absolute = try XenStorePath.canonicalize(path, for: context.domain, allowSpecial: true)
        } catch {
            throw StoreFailure(.einval)
        }
        guard
            let index = connections[context.connection]?.watches.firstIndex(where: {
                $0.absolute == absolute && $0.token == token
            })
        else { throw StoreFailure(.enoent) }
        connections[context.connection]!.watches.remove(at: index)
    }

    /// Queues an event for every watch that `path` changing triggers: `exact` watches must be on `path`
    /// itself, otherwise any watch at or above it fires. A watcher must be able to read the node (with
    /// `permissions` for a removed one) or its parent (C xenstored's `watch_permitted`).
    mutating func fireWatches(_ path: String, exact: Bool, permissions: XenStorePermissions?) {
        var events: [(XenStoreConnectionID, XenStorePacket)] = []
        for (id, connection) in connections where !connection.watches.isEmpty {
            var permitted: Bool?
            for watch in connection.watches {
                let matches = exact ? watch.absolute == path : XenStorePath.isAtOrBelow(path, watch.absolute)
                guard matches else { continue }
                if permitted == nil { permitted = watchPermitted(connection.domain, path, permissions) }
                guard permitted == true else { break }
                var eventPath = path
                if let prefix = watch.relativePrefix, path.hasPrefix(prefix) {
                    eventPath = String(path.dropFirst(prefix.count))
                }
                events.append(
                    (
                        id,
                        XenStoreReply.watchEvent(path: eventPath, token: watch.token).packet(
                            requestID: 0, transactionID: 0)
                    ))
            }
        }
        for (id, packet) in events { send(packet, to: id) }
    }

    func watchPermitted(_ domain: DomainID, _ path: String, _ permissions: XenStorePermissions?) -> Bool {
        if isPrivileged(domain) { return true }
        if let permissions = permissions ?? specialPermissions[path] ?? tree[path]?.permissions,
            access(domain, permissions).canRead
        {
            return true
        }
        if let parent = XenStorePath.parent(of: path), let node = tree[parent] {
            return access(domain, node.permissions).canRead
        }
        return false
    }

    // MARK: - Domains

    mutating func introduce(_ domain: DomainID, gfn: Int64, port: EventChannelPort) {
        if domains[domain] == nil {
            domains[domain] = XenStoreDomainRecord(gfn: gfn, port: port)
            fireWatches("@introduceDomain", exact: false, permissions: nil)
        } else {
            domains[domain]?.gfn = gfn
            domains[domain]?.port = port
        }
    }

    mutating func release(_ domain: DomainID) throws(StoreFailure) {
        guard domain != .dom0 else { throw StoreFailure(.einval) }
        guard domains.removeValue(forKey: domain) != nil else { throw StoreFailure(.enoent) }
        fireWatches("@releaseDomain", exact: false, permissions: nil)
    }
}
