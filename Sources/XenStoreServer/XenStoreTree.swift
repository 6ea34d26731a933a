import XenCore
import XenStoreProtocol

/// One node of the store.
///
/// OCaml: `Store.Node.t` of oxenstored / `struct node` of C xenstored
struct XenStoreNode: Sendable {
    var value: [UInt8]
    var permissions: XenStorePermissions
    /// Child names in creation order (C xenstored lists children in the order they were added).
    var children: [String]
    /// Unique per creation: a node removed and re-created is a different node.
    var identity: UInt64
    /// Changes when the value or the permissions change.
    var contentGeneration: UInt64
    /// Changes when a child is added or removed; `DIRECTORY_PART`'s generation.
    var childrenGeneration: UInt64

    /// Bytes of C xenstored's record of this node, what its node-size quota limits (`write_node_raw`): the
    /// header `struct xs_tdb_record_hdr` (a 64-bit generation and three 32-bit lengths: 24 bytes with
    /// padding), 8 bytes per permission entry (owner included), the value, and each child name with its NUL.
    var recordSize: Int {
        Self.recordSize(permissionEntries: permissions.acl.count + 1, value: value.count, childNames: childNameBytes)
    }

    /// The child list's bytes in the record: each name and its NUL.
    var childNameBytes: Int { children.reduce(0) { $0 + $1.utf8.count + 1 } }

    /// C xenstored's record size for a node with these contents.
    static func recordSize(permissionEntries: Int, value: Int, childNames: Int) -> Int {
        24 + 8 * permissionEntries + value + childNames
    }
}

/// The node tree, keyed by absolute path, with per-domain node counts for the quota. A value type: a
/// transaction's snapshot is a copy (copy-on-write) of this.
///
/// OCaml: oxenstored `Store.t`
struct XenStoreTree: Sendable {
    private(set) var nodes: [String: XenStoreNode]
    /// Nodes owned by each domain.
    private(set) var ownedNodes: [DomainID: Int] = [:]

    /// A tree holding only `/`, owned by dom0 with no access for others (as xenstored's `setup_structure`).
    init(generation: inout UInt64) {
        generation += 1
        nodes = [
            "/": XenStoreNode(
                value: [], permissions: XenStorePermissions(owner: .dom0, others: .none), children: [],
                identity: generation, contentGeneration: generation, childrenGeneration: generation)
        ]
        ownedNodes[.dom0] = 1
    }

    subscript(path: String) -> XenStoreNode? { nodes[path] }

    /// The nearest existing node at or above `path` (the root always exists).
    func nearestExisting(_ path: String) -> (path: String, node: XenStoreNode) {
        var current = path
        while true {
            if let node = nodes[current] { return (current, node) }
            guard let parent = XenStorePath.parent(of: current) else { return ("/", nodes["/"]!) }
            current = parent
        }
    }

    // MARK: - Mutations (permission checks happen before these are called)

    /// Sets a node's value, creating it and its missing parents. New nodes inherit the permissions of their
    /// parent; when `owner` is given (unprivileged writers), they are owned by it. Returns the paths created.
    @discardableResult
    mutating func write(
        _ path: String, value: [UInt8], owner: DomainID?, generation: inout UInt64
    ) -> [String] {
        let created = create(path, owner: owner, generation: &generation)
        generation += 1
        nodes[path]!.value = value
        nodes[path]!.contentGeneration = generation
        return created
    }

    /// Creates `path` and its missing parents with empty values; returns the paths created (outermost first).
    @discardableResult
    mutating func create(_ path: String, owner: DomainID?, generation: inout UInt64) -> [String] {
        guard nodes[path] == nil else { return [] }
        var missing: [String] = []
        var current = path
        while nodes[current] == nil, let parent = XenStorePath.parent(of: current) {
            missing.append(current)
            current = parent
        }
        for newPath in missing.reversed() {
            let parentPath = XenStorePath.parent(of: newPath)!
            var permissions = nodes[parentPath]!.permissions
            if let owner { permissions.owner = owner }
            generation += 1
            nodes[newPath] = XenStoreNode(
                value: [], permissions: permissions, children: [], identity: generation,
                contentGeneration: generation, childrenGeneration: generation)
            nodes[parentPath]!.children.append(XenStorePath.basename(of: newPath))
            nodes[parentPath]!.childrenGeneration = generation
            ownedNodes[permissions.owner, default: 0] += 1
        }
        return missing.reversed()
    }

    /// Removes `path` and everything below it; returns the removed paths with their last permissions
    /// (top first). The root cannot be removed.
    mutating func remove(_ path: String, generation: inout UInt64) -> [(String, XenStorePermissions)] {
        guard path != "/", nodes[path] != nil, let parentPath = XenStorePath.parent(of: path) else { return [] }
        var removed: [(String, XenStorePermissions)] = []
        var stack = [path]
        while let current = stack.popLast() {
            guard let node = nodes.removeValue(forKey: current) else { continue }
            removed.append((current, node.permissions))
            ownedNodes[node.permissions.owner, default: 1] -= 1
            for child in node.children { stack.append(XenStorePath.join(current, child)) }
        }
        let name = XenStorePath.basename(of: path)
        generation += 1
        nodes[parentPath]?.children.removeAll { $0 == name }
        nodes[parentPath]?.childrenGeneration = generation
        return removed
    }

    /// Replaces a node's permissions.
    mutating func setPermissions(_ path: String, _ permissions: XenStorePermissions, generation: inout UInt64) {
        guard let old = nodes[path] else { return }
        ownedNodes[old.permissions.owner, default: 1] -= 1
        ownedNodes[permissions.owner, default: 0] += 1
        generation += 1
        nodes[path]!.permissions = permissions
        nodes[path]!.contentGeneration = generation
    }

    /// Checks the invariants C xenstored's `CONTROL check` checks: every child exists, every node but the root
    /// is listed by its parent, the owner counts add up. Returns the problems found.
    func check() -> [String] {
        var problems: [String] = []
        var owned: [DomainID: Int] = [:]
        for (path, node) in nodes {
            owned[node.permissions.owner, default: 0] += 1
            for child in node.children where nodes[XenStorePath.join(path, child)] == nil {
                problems.append("\(path) lists missing child \(child)")
            }
            if let parent = XenStorePath.parent(of: path) {
                if nodes[parent]?.children.contains(XenStorePath.basename(of: path)) != true {
                    problems.append("\(path) is not listed by its parent")
                }
            }
        }
        if owned != ownedNodes.filter({ $0.value != 0 }) { problems.append("node ownership counts are wrong") }
        return problems
    }
}
