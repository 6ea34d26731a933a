import XenCore
import XenStoreProtocol
import XenStoreServer

// The quota part of the conversation table: what C xenstored 4.17 answers (read from its source: quotas need
// unprivileged connections, which the real-Xen replay cannot open). Accounting as C xenstored's:
// - Nodes per domain: outside a transaction a new node is refused once its owner already has the quota
//   (`create_node`: `domain_entry >= quota`), so a domain may reach exactly the quota. A transaction's new
//   nodes are counted again at commit against the live store: `live + the transaction's change >= quota`
//   fails the commit with ENOSPC (`transaction_fix_domains`; `>=`, so a commit may not reach the quota).
//   Inside a transaction a new node is refused while the live store is at the quota, as in C xenstored. One
//   difference: XenStoreServer also refuses it as soon as the transaction's own view (its snapshot plus its
//   own changes) would pass the quota, which bounds a transaction's memory; C xenstored bounds a transaction
//   by 1024 touched nodes instead, so there the same guest gets ENOSPC at the commit rather than at the
//   WRITE. No node is created either way.
// - Node size: the node's whole record as C xenstored stores it (`write_node_raw`): a 24-byte header, 8 bytes
//   per permission entry (owner included), the value and every child name with its NUL; refused when it
//   reaches the quota (`>=`). Checked for every node a request writes, the parent that gains a child included.

/// `/local/domain/5`, owned by domain 5 (one node of its quota; its record is 24 + 8 bytes).
private let home: [ConversationStep] = [
    .req("d0", .mkdir(path: "/local/domain/5"), .ok(.mkdir)),
    .req(
        "d0", .setPermissions(path: "/local/domain/5", permissions: XenStorePermissions(owner: 5)),
        .ok(.setPermissions)),
]

/// `count` writes of new nodes `<prefix><n>` in transaction `tx` of d5.
private func newNodes(_ prefix: String, _ count: Int, tx: String) -> [ConversationStep] {
    (0..<count).map { .write("d5", "\(prefix)\($0)", "", tx: tx) }
}

/// A 20-byte child name.
private func name20(_ index: Int) -> String {
    let digits = String(index)
    return "child" + String(repeating: "0", count: 15 - digits.utf8.count) + digits
}

/// Quotas: nodes per domain and node size, inside and outside transactions.
package let quotaConversations: [Conversation] = [
    Conversation(
        name: "node count, node size and permission-entry quotas of unprivileged domains",
        connections: ["d0": 0, "d5": 5],
        quotas: XenStoreQuotas(nodesPerDomain: 5),
        steps: home + [
            .write("d5", "a", ""), .write("d5", "b", ""), .write("d5", "c", ""), .write("d5", "d", ""),
            .fails("d5", .write(path: "e", value: []), .enospc),
            .req("d5", .rm(path: "d"), .ok(.rm)),
            .fails("d5", .write(path: "x/y", value: []), .enospc),
            .write("d5", "x", ""),
            .fails("d5", .write(path: "a", value: Array(repeating: 0x41, count: 2100)), .enospc),
            .write("d5", "a", String(repeating: "A", count: 1000)),
            .write("d0", "/local/domain/5/dom0big", String(repeating: "B", count: 3000)),
            .fails(
                "d5",
                .setPermissions(
                    path: "a",
                    permissions: XenStorePermissions(owner: 5, acl: (1...6).map { .init(.read, DomainID($0)) })
                ),
                .enospc),
            .req(
                "d5",
                .setPermissions(
                    path: "a",
                    permissions: XenStorePermissions(owner: 5, acl: (1...5).map { .init(.read, DomainID($0)) })
                ),
                .ok(.setPermissions)),
        ]),
    Conversation(
        // Issue #20, found by fuzzing: each transaction checked the quota against its own snapshot only, so
        // three transactions of 23 new nodes each all committed (70 nodes against a quota of 24).
        name: "the node quota holds at commit against the live store, across transactions",
        connections: ["d0": 0, "d5": 5],
        quotas: XenStoreQuotas(nodesPerDomain: 24, transactionsPerConnection: 3),
        steps: home + [.begin("d5", "A"), .begin("d5", "B"), .begin("d5", "C")]
            + newNodes("a", 23, tx: "A") + newNodes("b", 23, tx: "B") + newNodes("c", 23, tx: "C") + [
                // 1 + 23 reaches the quota: refused at commit (C xenstored's `>=`), each one.
                .commit("d5", "A", .error(.enospc)),
                .commit("d5", "B", .error(.enospc)),
                .commit("d5", "C", .error(.enospc)),
                .req("d5", .directory(path: "/local/domain/5"), .directory([])),
                // Each of these fits alone (1 + 12 = 13), both together do not (13 + 12 = 25).
                .begin("d5", "D"), .begin("d5", "E"),
            ] + newNodes("d", 12, tx: "D") + newNodes("e", 12, tx: "E") + [
                .commit("d5", "D"),
                .commit("d5", "E", .error(.enospc)),
                .fails("d5", .read(path: "e0"), .enoent),
                // Outside a transaction the domain may reach the quota exactly: 13 + 11 = 24.
            ] + (0..<11).map { .write("d5", "f\($0)", "") } + [
                .fails("d5", .write(path: "g", value: []), .enospc),
                // A transaction that only changes values still commits at the quota.
                .begin("d5", "F"),
                .write("d5", "f0", "changed", tx: "F"),
                .commit("d5", "F"),
                // Inside a transaction a new node is also refused while the live store is at the quota (C
                // xenstored counts only the live store there), even after removals in the same transaction;
                // the removals commit and free the room.
                .begin("d5", "G"),
                .req("d5", .rm(path: "f1"), tx: "G", .ok(.rm)),
                .req("d5", .rm(path: "f2"), tx: "G", .ok(.rm)),
                .fails("d5", .write(path: "g", value: []), tx: "G", .enospc),
                .commit("d5", "G"),
                .fails("d5", .read(path: "f1"), .enoent),
                .write("d5", "g", ""),
            ]),
    Conversation(
        // Issue #20, found by fuzzing: the parent's child list was not counted, so 20 children with 20-byte
        // names grew the home's record past the node-size quota.
        name: "the node-size quota counts the whole record: header, permissions, value, child names",
        connections: ["d0": 0, "d5": 5],
        quotas: XenStoreQuotas(nodeSize: 256),
        steps: home + [
            // A leaf: 24 + 8 + 223 = 255 fits, 24 + 8 + 224 = 256 does not.
            .write("d5", "v", String(repeating: "V", count: 223)),
            .fails("d5", .write(path: "v", value: Array(repeating: 0x56, count: 224)), .enospc),
            // One more permission entry is 8 bytes more: 263.
            .fails(
                "d5", .setPermissions(path: "v", permissions: XenStorePermissions(owner: 5, acl: [.init(.read, 6)])),
                .enospc),
            // The home: 24 + 8 + "v\0" = 34, then 21 bytes per child: 10 fit (244), the 11th does not (265).
        ] + (0..<10).map { .write("d5", name20($0), "") } + [
            .fails("d5", .write(path: name20(10), value: []), .enospc),
            .fails("d5", .mkdir(path: name20(10)), .enospc),
            .fails("d5", .write(path: "\(name20(10))/below", value: []), .enospc),
            .req("d5", .directory(path: "/local/domain/5"), .directory(["v"] + (0..<10).map(name20))),
            // dom0 is exempt; afterwards even an empty value for the home is too big for d5 to write.
            .write("d0", "/local/domain/5/\(name20(10))", ""),
            .fails("d5", .write(path: "/local/domain/5", value: []), .enospc),
            // Removing is always allowed, and makes room again.
            .req("d5", .rm(path: name20(10)), .ok(.rm)),
            .write("d5", "/local/domain/5", ""),
            // A new intermediate node's record holds its one child: 24 + 8 + 231 + 1 = 264.
            .req("d5", .rm(path: name20(9)), .ok(.rm)),
            .fails(
                "d5",
                .write(
                    path: String(repeating: "m", count: 10) + "/" + String(repeating: "n", count: 231),
                    value: []), .enospc),
            .write("d5", String(repeating: "m", count: 10) + "/" + String(repeating: "n", count: 222), ""),
        ]),
    Conversation(
        name: "watch and transaction quotas per connection",
        connections: ["d0": 0, "d5": 5],
        quotas: XenStoreQuotas(watchesPerConnection: 3, transactionsPerConnection: 2),
        steps: [
            .req("d5", .watch(path: "/q1", token: "t"), .ok(.watch)),
            .req("d5", .watch(path: "/q2", token: "t"), .ok(.watch)),
            .req("d5", .watch(path: "/q3", token: "t"), .ok(.watch)),
            .fails("d5", .watch(path: "/q4", token: "t"), .e2big),
            .req("d0", .watch(path: "/q1", token: "t"), .ok(.watch)),
            .req("d0", .watch(path: "/q2", token: "t"), .ok(.watch)),
            .req("d0", .watch(path: "/q3", token: "t"), .ok(.watch)),
            .req("d0", .watch(path: "/q4", token: "t"), .ok(.watch)),
            .begin("d5", "A"), .begin("d5", "B"),
            .fails("d5", .transactionStart, .enospc),
            .req("d5", .transactionEnd(commit: false), tx: "A", .ok(.transactionEnd)),
            .begin("d5", "C"),
            .begin("d0", "X"), .begin("d0", "Y"), .begin("d0", "Z"),
        ]),
]
