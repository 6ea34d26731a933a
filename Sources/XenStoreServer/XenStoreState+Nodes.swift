import XenCore
import XenStoreProtocol

/// A change made inside a transaction, replayed on the real tree at commit.
enum XenStoreTransactionOperation: Sendable {
    case write(path: String, value: [UInt8], owner: DomainID?)
    case mkdir(path: String, owner: DomainID?)
    case rm(path: String)
    case setPermissions(path: String, permissions: XenStorePermissions)
}

// MARK: - Node operations (C xenstored's do_read, do_write, do_mkdir, do_rm, do_get_perms, do_set_perms)

extension XenStoreState {
    func canonical(_ path: String, _ context: OperationContext) throws(StoreFailure) -> String {
        do {
            return try XenStorePath.canonicalize(path, for: context.domain)
        } catch {
            throw StoreFailure(.einval)
        }
    }

    /// The tree the operation sees: the transaction's snapshot or the live tree.
    func currentTree(_ context: OperationContext) -> XenStoreTree {
        guard context.transaction != 0,
            let transaction = connections[context.connection]?.transactions[context.transaction]
        else { return tree }
        return transaction.tree
    }

    mutating func mutateTree<R>(
        _ context: OperationContext, _ body: (inout XenStoreTree, inout UInt64) -> R
    ) -> R {
        if context.transaction == 0 { return body(&tree, &generation) }
        return body(&connections[context.connection]!.transactions[context.transaction]!.tree, &generation)
    }

    /// xenstored's `get_node`: the node if the caller has `need` on it; `EACCES` if not; for a missing node
    /// `ENOENT`, or `EACCES` when the caller may not even read the nearest existing ancestor
    /// (`errno_from_parents`), so existence does not leak.
    func lookup(
        _ path: String, in tree: XenStoreTree, need: XenStoreAccess, domain: DomainID
    ) throws(StoreFailure) -> XenStoreNode {
        if let node = tree[path] {
            let have = access(domain, node.permissions)
            if (need.canRead && !have.canRead) || (need.canWrite && !have.canWrite) {
                throw StoreFailure(.eacces)
            }
            return node
        }
        let ancestor = tree.nearestExisting(path)
        guard access(domain, ancestor.node.permissions).canRead else { throw StoreFailure(.eacces) }
        throw StoreFailure(.enoent)
    }

    mutating func read(
        _ path: String, _ context: OperationContext, children: Bool = false
    ) throws(StoreFailure) -> XenStoreNode {
        let absolute = try canonical(path, context)
        noteRead(context, absolute, content: !children, children: children)
        return try lookup(absolute, in: currentTree(context), need: .read, domain: context.domain)
    }

    mutating func directoryPart(
        _ path: String, offset: UInt32, _ context: OperationContext
    ) throws(StoreFailure) -> XenStoreReply {
        let node = try read(path, context, children: true)
        let generation = String(node.childrenGeneration)
        var childBytes: [UInt8] = []
        for child in node.children {
            childBytes.append(contentsOf: child.utf8)
            childBytes.append(0)
        }
        let start = Int(offset)
        guard start < childBytes.count else {
            return .directoryPart(generation: generation, children: [], complete: true)
        }
        // C xenstored's send_directory_part: as many whole names as fit after the generation and the
        // final NUL.
        let maximum = XenStoreLimits.payloadMax - (generation.utf8.count + 1) - 1
        var length = 0
        var position = start
        while position < childBytes.count {
            let end = childBytes[position...].firstIndex(of: 0) ?? childBytes.count
            let nameLength = end - position
            guard length + nameLength < maximum else { break }
            length += nameLength + 1
            position += nameLength + 1
        }
        let chunk = childBytes[start..<(start + length)]
        let names = chunk.split(separator: 0, omittingEmptySubsequences: false).dropLast().map {
            String(decoding: $0, as: UTF8.self)
        }
        return .directoryPart(
            generation: generation, children: names, complete: start + length == childBytes.count)
    }

    mutating func getPermissions(_ path: String, _ context: OperationContext) throws(StoreFailure)
        -> XenStorePermissions
    {
        if XenStorePath.isSpecial(path) {
            guard let permissions = specialPermissions[path] else { throw StoreFailure(.einval) }
            return permissions
        }
        return try read(path, context).permissions
    }

    mutating func write(_ path: String, value: [UInt8], _ context: OperationContext) throws(StoreFailure) {
        let absolute = try canonical(path, context)
        let privileged = isPrivileged(context.domain)
        // C xenstored reads a node before it writes it: the commit conflicts if it changed meanwhile.
        noteRead(context, absolute, content: true, children: true)
        do {
            // The snapshot copy must be gone before the tree is mutated, or the mutation copies the tree.
            let current = currentTree(context)
            if let node = current[absolute] {
                _ = try lookup(absolute, in: current, need: .write, domain: context.domain)
                if !privileged && node.recordSize - node.value.count + value.count >= quotas.nodeSize {
                    throw StoreFailure(.enospc)
                }
            } else {
                try checkCreate(absolute, value: value.count, in: current, context)
            }
        }
        let owner = privileged ? nil : context.domain
        let created = mutateTree(context) { tree, generation in
            tree.write(absolute, value: value, owner: owner, generation: &generation)
        }
        changed(context, .write(path: absolute, value: value, owner: owner), paths: created + [absolute])
    }

    mutating func mkdir(_ path: String, _ context: OperationContext) throws(StoreFailure) {
        let absolute = try canonical(path, context)
        noteRead(context, absolute, content: true, children: true)
        do {
            let current = currentTree(context)
            if current[absolute] != nil {
                // An existing node is left alone, but only for callers who could have written it.
                _ = try lookup(absolute, in: current, need: .write, domain: context.domain)
                return
            }
            try checkCreate(absolute, value: 0, in: current, context)
        }
        let owner = isPrivileged(context.domain) ? nil : context.domain
        let created = mutateTree(context) { tree, generation in
            tree.create(absolute, owner: owner, generation: &generation)
        }
        changed(context, .mkdir(path: absolute, owner: owner), paths: created)
    }

    /// Creating a node needs write access to its nearest existing ancestor and, for unprivileged domains,
    /// room in the quotas as C xenstored's `create_node` counts them: the owner's node count (outside a
    /// transaction in the live store; inside one, the live store must be below the quota, and the commit
    /// counts again), and the node-size quota for every record written: each new node (an intermediate one
    /// holds its child's name, the last one `value` bytes) and the ancestor, which gains a child name.
    mutating func checkCreate(
        _ absolute: String, value: Int, in current: XenStoreTree, _ context: OperationContext
    ) throws(StoreFailure) {
        let ancestor = current.nearestExisting(absolute)
        // C xenstored reads the parent it adds a child to: the commit conflicts if it changed meanwhile.
        noteRead(context, ancestor.path, content: true, children: true)
        guard access(context.domain, ancestor.node.permissions).canWrite else { throw StoreFailure(.eacces) }
        guard !isPrivileged(context.domain) else { return }
        if context.transaction != 0 {
            connections[context.connection]?.transactions[context.transaction]?.createdNode = true
        }
        // The names of the nodes to create, outermost first (`ancestor` is a proper prefix of `absolute`).
        let names = absolute.utf8.dropFirst(ancestor.path == "/" ? 1 : ancestor.path.utf8.count + 1)
            .split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        let owned = current.ownedNodes[context.domain, default: 0]
        // Outside a transaction `current` is the live store. Inside one, its own view also stays within the
        // quota, which bounds the transaction's memory (C xenstored bounds it by touched nodes instead).
        if owned + names.count > quotas.nodesPerDomain
            || (context.transaction != 0 && tree.ownedNodes[context.domain, default: 0] >= quotas.nodesPerDomain)
        {
            throw StoreFailure(.enospc)
        }
        guard let first = names.first else { return }
        if ancestor.node.recordSize + first.count + 1 >= quotas.nodeSize { throw StoreFailure(.enospc) }
        let entries = ancestor.node.permissions.acl.count + 1
        for index in names.indices {
            let last = index == names.count - 1
            let size = XenStoreNode.recordSize(
                permissionEntries: entries, value: last ? value : 0, childNames: last ? 0 : names[index + 1].count + 1)
            if size >= quotas.nodeSize { throw StoreFailure(.enospc) }
        }
    }

    mutating func rm(_ path: String, _ context: OperationContext) throws(StoreFailure) {
        let absolute = try canonical(path, context)
        guard absolute != "/" else { throw StoreFailure(.einval) }
        // C xenstored's rm_node reads the node and the parent it leaves: the commit conflicts if either changed.
        // Both are noted before the transaction's own change, so later reads of them do not see it.
        let parent = XenStorePath.parent(of: absolute) ?? "/"
        noteRead(context, absolute, content: true, children: true)
        noteRead(context, parent, content: true, children: true)
        do {
            let current = currentTree(context)
            do {
                _ = try lookup(absolute, in: current, need: .write, domain: context.domain)
            } catch let failure where failure.name == .enoent {
                // Removing a missing node is fine if its parent exists (xenstored's do_rm).
                if current[parent] != nil { return }
                throw failure
            }
        }
        let removed = mutateTree(context) { tree, generation in tree.remove(absolute, generation: &generation) }
        changed(context, .rm(path: absolute), removed: removed)
    }

    mutating func setPermissions(
        _ path: String, _ permissions: XenStorePermissions, _ context: OperationContext
    ) throws(StoreFailure) {
        let privileged = isPrivileged(context.domain)
        if XenStorePath.isSpecial(path) {
            guard let old = specialPermissions[path] else { throw StoreFailure(.einval) }
            guard access(context.domain, old).canWrite else { throw StoreFailure(.eacces) }
            specialPermissions[path] = permissions
            return
        }
        let absolute = try canonical(path, context)
        noteRead(context, absolute, content: true, children: true)
        let node = try lookup(absolute, in: currentTree(context), need: .write, domain: context.domain)
        if !privileged {
            // Only the owner (or a domain targeting it) may change permissions; only dom0 may give a node away.
            let target = domains[context.domain]?.target
            guard node.permissions.owner == context.domain || node.permissions.owner == target else {
                throw StoreFailure(.eacces)
            }
            guard permissions.owner == node.permissions.owner else { throw StoreFailure(.eperm) }
            guard permissions.acl.count <= quotas.permissionsPerNode else { throw StoreFailure(.enospc) }
            let size = XenStoreNode.recordSize(
                permissionEntries: permissions.acl.count + 1, value: node.value.count, childNames: node.childNameBytes)
            guard size < quotas.nodeSize else { throw StoreFailure(.enospc) }
        }
        mutateTree(context) { tree, generation in
            tree.setPermissions(absolute, permissions, generation: &generation)
        }
        changed(context, .setPermissions(path: absolute, permissions: permissions), paths: [absolute])
    }

    // MARK: - After a change

    /// Records a change: in a transaction it goes to the log (watches fire at commit); otherwise watches
    /// fire now.
    mutating func changed(
        _ context: OperationContext, _ operation: XenStoreTransactionOperation, paths: [String] = [],
        removed: [(String, XenStorePermissions)] = []
    ) {
        if context.transaction != 0 {
            connections[context.connection]!.transactions[context.transaction]!.record(
                operation, paths: paths + removed.map(\.0))
            return
        }
        fireWatches(for: operation, removed: removed)
    }

    /// Fires the watches a change on the live tree triggers (C xenstored: the changed node non-exactly, every
    /// removed node below it exactly).
    mutating func fireWatches(for operation: XenStoreTransactionOperation, removed: [(String, XenStorePermissions)]) {
        switch operation {
        case .write(let path, _, _), .setPermissions(let path, _):
            fireWatches(path, exact: false, permissions: nil)
        case .mkdir(let path, _):
            fireWatches(path, exact: false, permissions: nil)
        case .rm(let path):
            guard let top = removed.first else { return }
            fireWatches(path, exact: false, permissions: top.1)
            for (below, permissions) in removed.dropFirst() {
                fireWatches(below, exact: true, permissions: permissions)
            }
        }
    }
}
