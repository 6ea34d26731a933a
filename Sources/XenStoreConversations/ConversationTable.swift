import XenCore
import XenStoreProtocol
import XenStoreServer

// The conversation table: what C xenstored 4.17 answers, step by step. "d0" is a dom0 connection, "d5"/"d6"/"d7"
// are connections of unprivileged domains. Paths of the form /local/domain/N belong to domain N.

private typealias S = ConversationStep
private let none = XenStorePermissions(owner: .dom0)
private func perms(_ owner: DomainID, _ others: XenStoreAccess, _ acl: [XenStorePermission] = []) -> XenStorePermissions
{
    XenStorePermissions(owner: owner, others: others, acl: acl)
}

/// Permissions: who may read, write and list which nodes, and which error an unprivileged domain gets.
package let permissionConversations: [Conversation] = [
    Conversation(
        name: "unprivileged domains get EACCES on dom0's nodes, ENOENT only where they may look",
        connections: ["d0": 0, "d5": 5],
        steps: [
            .write("d0", "/secret", "s"),
            .fails("d5", .read(path: "/secret"), .eacces),
            .fails("d5", .read(path: "/secret/missing"), .eacces),
            .fails("d5", .directory(path: "/secret"), .eacces),
            .write("d0", "/pub", "p"),
            .req("d0", .setPermissions(path: "/pub", permissions: perms(0, .read)), .ok(.setPermissions)),
            .read("d5", "/pub", "p"),
            .fails("d5", .read(path: "/pub/missing"), .enoent),
            .fails("d5", .write(path: "/pub", value: [1]), .eacces),
            .fails("d5", .write(path: "/pub/child", value: [1]), .eacces),
            .fails("d5", .rm(path: "/pub"), .eacces),
            .req("d5", .getPermissions(path: "/pub"), .permissions(perms(0, .read))),
            .read("d0", "/secret", "s"),
        ]),
    Conversation(
        name: "per-domain entries override the default, the owner always has full access",
        connections: ["d0": 0, "d5": 5, "d6": 6],
        steps: [
            .write("d0", "/acl", "a"),
            .req(
                "d0", .setPermissions(path: "/acl", permissions: perms(7, .none, [.init(.both, 5), .init(.read, 6)])),
                .ok(.setPermissions)),
            .write("d5", "/acl", "by5"),
            .read("d6", "/acl", "by5"),
            .fails("d6", .write(path: "/acl", value: [0]), .eacces),
            .req(
                "d0", .getPermissions(path: "/acl"), .permissions(perms(7, .none, [.init(.both, 5), .init(.read, 6)]))),
        ]),
    Conversation(
        name: "relative paths live below /local/domain/<domid>; creators own what they create",
        connections: ["d0": 0, "d5": 5, "d6": 6],
        steps: [
            .req("d0", .mkdir(path: "/local/domain/5"), .ok(.mkdir)),
            .req("d0", .setPermissions(path: "/local/domain/5", permissions: perms(5, .none)), .ok(.setPermissions)),
            .write("d5", "data/key", "v"),
            .read("d0", "/local/domain/5/data/key", "v"),
            .read("d5", "data/key", "v"),
            .req("d5", .getPermissions(path: "data/key"), .permissions(perms(5, .none))),
            .write("d0", "/local/domain/5/fromdom0", "x"),
            .req("d0", .getPermissions(path: "/local/domain/5/fromdom0"), .permissions(perms(5, .none))),
            .req("d5", .directory(path: "/local/domain/5"), .directory(["data", "fromdom0"])),
            .req("d0", .getDomainPath(domain: 5), .domainPath("/local/domain/5")),
            .req("d0", .write(path: "rel", value: []), .ok(.write)),
            .req("d0", .directory(path: "/local/domain/0"), .directory(["rel"])),
        ]),
    Conversation(
        name: "only the owner sets permissions and only dom0 gives nodes away",
        connections: ["d0": 0, "d5": 5, "d6": 6],
        steps: [
            .req("d0", .mkdir(path: "/local/domain/5"), .ok(.mkdir)),
            .req("d0", .setPermissions(path: "/local/domain/5", permissions: perms(5, .none)), .ok(.setPermissions)),
            .write("d5", "key", "v"),
            .fails("d5", .setPermissions(path: "key", permissions: perms(6, .none)), .eperm),
            .req(
                "d5", .setPermissions(path: "key", permissions: perms(5, .none, [.init(.read, 6)])),
                .ok(.setPermissions)),
            .read("d6", "/local/domain/5/key", "v"),
            .fails("d6", .setPermissions(path: "/local/domain/5/key", permissions: perms(6, .both)), .eacces),
            .req(
                "d0", .setPermissions(path: "/local/domain/5/key", permissions: perms(6, .none)), .ok(.setPermissions)),
            .write("d6", "/local/domain/5/key", "now6"),
            .fails("d5", .read(path: "key"), .eacces),
        ]),
    Conversation(
        name: "domain management and CONTROL are dom0's; SET_TARGET lends the target's rights",
        connections: ["d0": 0, "d5": 5, "d7": 7],
        steps: [
            .fails("d5", .introduce(domain: 9, gfn: 1, port: 1), .eacces),
            .fails("d5", .release(domain: 0), .eacces),
            .fails("d5", .control(arguments: ["print", "hi"]), .eacces),
            .fails("d5", .setTarget(domain: 5, target: 5), .eacces),
            .req("d0", .introduce(domain: 5, gfn: 100, port: 3), .ok(.introduce)),
            .req("d0", .introduce(domain: 7, gfn: 101, port: 4), .ok(.introduce)),
            .req("d0", .isDomainIntroduced(domain: 5), .isDomainIntroduced(true)),
            .req("d0", .isDomainIntroduced(domain: 8), .isDomainIntroduced(false)),
            .req("d0", .mkdir(path: "/local/domain/5"), .ok(.mkdir)),
            .req("d0", .setPermissions(path: "/local/domain/5", permissions: perms(5, .none)), .ok(.setPermissions)),
            .write("d5", "private", "p"),
            .fails("d7", .read(path: "/local/domain/5/private"), .eacces),
            .req("d0", .setTarget(domain: 7, target: 5), .ok(.setTarget)),
            .read("d7", "/local/domain/5/private", "p"),
            .write("d7", "/local/domain/5/private", "by7"),
            .fails("d0", .setTarget(domain: 8, target: 5), .enoent),
            .req("d0", .resume(domain: 5), .ok(.resume)),
            .fails("d0", .resume(domain: 8), .enoent),
            .req("d0", .release(domain: 5), .ok(.release)),
            .req("d0", .isDomainIntroduced(domain: 5), .isDomainIntroduced(false)),
            .fails("d0", .release(domain: 5), .enoent),
            .req("d0", .control(arguments: ["print", "hello"]), .control(Array("OK\0".utf8))),
            .req("d0", .control(arguments: ["check"]), .control(Array("OK\0".utf8))),
            .fails("d0", .control(arguments: ["no-such-command"]), .einval),
        ]),
    Conversation(
        name: "path rules: invalid paths, rm semantics, implicit parents",
        connections: ["d0": 0],
        steps: [
            .fails("d0", .read(path: "/a//b"), .einval),
            .fails("d0", .write(path: "/a/", value: []), .einval),
            .fails("d0", .read(path: "/a b"), .einval),
            .fails("d0", .read(path: "@introduceDomain"), .einval),
            .fails("d0", .rm(path: "/"), .einval),
            .write("d0", "/x/y/z", "deep"),
            .read("d0", "/x/y", ""),
            .req("d0", .directory(path: "/x"), .directory(["y"])),
            .req("d0", .rm(path: "/x/y/missing"), .ok(.rm)),
            .fails("d0", .rm(path: "/x/missing/child"), .enoent),
            .fails("d0", .read(path: "/x/missing"), .enoent),
            .req("d0", .mkdir(path: "/x/y/z"), .ok(.mkdir)),
            .read("d0", "/x/y/z", "deep"),
            .req("d0", .rm(path: "/x"), .ok(.rm)),
            .fails("d0", .read(path: "/x/y/z"), .enoent),
            .req("d0", .directory(path: "/"), .directory([])),
        ]),
]

/// Transactions: isolation, conflicts at commit, and transaction ids that are wrong or unknown.
package let transactionConversations: [Conversation] = [
    Conversation(
        name: "a transaction sees its own writes, others see them only after commit",
        connections: ["a": 0, "b": 0],
        steps: [
            .write("a", "/t/a", "1"),
            .begin("a", "T"),
            .write("a", "/t/a", "2", tx: "T"),
            .read("a", "/t/a", tx: "T", "2"),
            .read("a", "/t/a", "1"),
            .read("b", "/t/a", "1"),
            .commit("a", "T"),
            .read("b", "/t/a", "2"),
        ]),
    Conversation(
        name: "commit fails with EAGAIN when something the transaction read changed",
        connections: ["a": 0, "b": 0],
        steps: [
            .write("a", "/t/a", "1"),
            .begin("a", "T"),
            .read("a", "/t/a", tx: "T", "1"),
            .write("b", "/t/a", "3"),
            .write("a", "/t/b", "x", tx: "T"),
            .commit("a", "T", .error(.eagain)),
            .fails("a", .read(path: "/t/b"), .enoent),
            .read("a", "/t/a", "3"),
        ]),
    Conversation(
        name: "writes without reads do not conflict; a listed directory does",
        connections: ["a": 0, "b": 0],
        steps: [
            .write("a", "/t/a", "1"),
            .begin("a", "W"),
            .write("a", "/t/c", "c", tx: "W"),
            .write("b", "/t/a", "4"),
            .commit("a", "W"),
            .read("b", "/t/c", "c"),
            .begin("a", "D"),
            .req("a", .directory(path: "/t"), tx: "D", .directory(["a", "c"])),
            .write("b", "/t/new", ""),
            .write("a", "/t/d", "d", tx: "D"),
            .commit("a", "D", .error(.eagain)),
        ]),
    Conversation(
        // Creating a node reads its parent and writing a node reads it (C xenstored's get_node/read_node), so
        // a commit conflicts when either changed meanwhile: this also keeps the node-size quota, checked
        // against the transaction's view of those nodes, true of the live store after the commit.
        name: "creating reads the parent, writing reads the node: concurrent changes to them conflict",
        connections: ["a": 0, "b": 0],
        steps: [
            .write("a", "/t/a", "1"),
            .begin("a", "A"),
            .begin("b", "B"),
            .write("a", "/t/b", "b", tx: "A"),
            .write("b", "/t/c", "c", tx: "B"),
            .commit("a", "A"),
            .commit("b", "B", .error(.eagain)),
            .req("a", .directory(path: "/t"), .directory(["a", "b"])),
            .begin("a", "C"),
            .write("a", "/t/a", "2", tx: "C"),
            .write("b", "/t/a", "3"),
            .commit("a", "C", .error(.eagain)),
            .read("a", "/t/a", "3"),
            .begin("a", "D"),
            .write("a", "/t/a", "4", tx: "D"),
            .write("b", "/t/a/child", ""),
            .commit("a", "D", .error(.eagain)),
            .read("a", "/t/a", "3"),
        ]),
    Conversation(
        name: "abort, unknown and finished transaction ids, EBUSY, RESET_WATCHES",
        connections: ["a": 0],
        steps: [
            .begin("a", "T"),
            .write("a", "/t/d", "d", tx: "T"),
            .req("a", .transactionEnd(commit: false), tx: "T", .ok(.transactionEnd)),
            .fails("a", .read(path: "/t/d"), .enoent),
            .fails("a", .read(path: "/"), tx: "T", .enoent),
            .fails("a", .read(path: "/"), tx: "never-started", .enoent),
            .fails("a", .transactionEnd(commit: true), .enoent),
            .begin("a", "U"),
            .fails("a", .transactionStart, tx: "U", .ebusy),
            .req("a", .resetWatches, .ok(.resetWatches)),
            .fails("a", .read(path: "/"), tx: "U", .enoent),
        ]),
    Conversation(
        name: "removal inside a transaction, then commit",
        connections: ["a": 0],
        steps: [
            .write("a", "/r/x", "1"),
            .write("a", "/r/y", "2"),
            .begin("a", "T"),
            .req("a", .rm(path: "/r/x"), tx: "T", .ok(.rm)),
            .fails("a", .read(path: "/r/x"), tx: "T", .enoent),
            .read("a", "/r/x", "1"),
            .commit("a", "T"),
            .req("a", .directory(path: "/r"), .directory(["y"])),
        ]),
]

/// Watches: which events fire, for whom, and when (transactions deliver at commit).
package let watchConversations: [Conversation] = [
    Conversation(
        name: "a watch fires on registration, on changes at or below, on removal",
        connections: ["d0": 0, "w": 0],
        steps: [
            .write("d0", "/w/x/y", "1"),
            .req("w", .watch(path: "/w", token: "tok"), .ok(.watch)),
            .req("w", .watch(path: "/w/x/y", token: "deep"), .ok(.watch)),
            .events("w", [event("/w", "tok"), event("/w/x/y", "deep")]),
            .write("d0", "/w/x", "2"),
            .write("d0", "/other", "3"),
            .events("w", [event("/w/x", "tok")]),
            .req("d0", .setPermissions(path: "/w/x", permissions: perms(0, .read)), .ok(.setPermissions)),
            .events("w", [event("/w/x", "tok")]),
            .req("d0", .rm(path: "/w"), .ok(.rm)),
            .events("w", [event("/w", "tok"), event("/w/x/y", "deep")]),
            .fails("w", .watch(path: "/w", token: "tok"), .eexist),
            .req("w", .unwatch(path: "/w", token: "tok"), .ok(.unwatch)),
            .fails("w", .unwatch(path: "/w", token: "tok"), .enoent),
            .write("d0", "/w/z", "4"),
            .events("w", []),
        ]),
    Conversation(
        name: "relative watches report relative paths",
        connections: ["d0": 0, "d5": 5],
        steps: [
            .req("d0", .mkdir(path: "/local/domain/5"), .ok(.mkdir)),
            .req("d0", .setPermissions(path: "/local/domain/5", permissions: perms(5, .none)), .ok(.setPermissions)),
            .req("d5", .watch(path: "data", token: "rel"), .ok(.watch)),
            .req("d5", .watch(path: "/local/domain/5/data", token: "abs"), .ok(.watch)),
            .events("d5", [event("data", "rel"), event("/local/domain/5/data", "abs")]),
            .write("d0", "/local/domain/5/data/k", "v"),
            .events("d5", [event("data/k", "rel"), event("/local/domain/5/data/k", "abs")]),
        ]),
    Conversation(
        name: "@introduceDomain and @releaseDomain",
        connections: ["d0": 0],
        steps: [
            .req("d0", .watch(path: "@introduceDomain", token: "i"), .ok(.watch)),
            .req("d0", .watch(path: "@releaseDomain", token: "r"), .ok(.watch)),
            .events("d0", [event("@introduceDomain", "i"), event("@releaseDomain", "r")]),
            .req("d0", .introduce(domain: 9, gfn: 5, port: 1), .ok(.introduce)),
            .events("d0", [event("@introduceDomain", "i")]),
            .req("d0", .introduce(domain: 9, gfn: 5, port: 1), .ok(.introduce)),
            .events("d0", []),
            .req("d0", .release(domain: 9), .ok(.release)),
            .events("d0", [event("@releaseDomain", "r")]),
        ]),
    Conversation(
        name: "unprivileged watchers only hear about nodes they may read",
        connections: ["d0": 0, "d5": 5],
        steps: [
            .write("d0", "/secret/a", "s"),
            .req("d5", .watch(path: "/secret", token: "t"), .ok(.watch)),
            .req("d5", .watch(path: "@introduceDomain", token: "i"), .ok(.watch)),
            .events("d5", [event("/secret", "t"), event("@introduceDomain", "i")]),
            .write("d0", "/secret/a", "changed"),
            .req("d0", .introduce(domain: 9, gfn: 5, port: 1), .ok(.introduce)),
            .events("d5", []),
            .req("d0", .setPermissions(path: "/secret/a", permissions: perms(0, .read)), .ok(.setPermissions)),
            .events("d5", [event("/secret/a", "t")]),
            .req("d0", .setPermissions(path: "@releaseDomain", permissions: perms(0, .read)), .ok(.setPermissions)),
            .req("d5", .watch(path: "@releaseDomain", token: "r"), .ok(.watch)),
            .req("d0", .release(domain: 9), .ok(.release)),
            .events("d5", [event("@releaseDomain", "r"), event("@releaseDomain", "r")]),
        ]),
    Conversation(
        name: "transactions fire watches at commit only; RESET_WATCHES silences",
        connections: ["d0": 0, "w": 0],
        steps: [
            .req("w", .watch(path: "/tw", token: "t"), .ok(.watch)),
            .events("w", [event("/tw", "t")]),
            .begin("d0", "T"),
            .write("d0", "/tw/a", "1", tx: "T"),
            .events("w", []),
            .commit("d0", "T"),
            .events("w", [event("/tw/a", "t")]),
            .begin("d0", "A"),
            .write("d0", "/tw/b", "1", tx: "A"),
            .req("d0", .transactionEnd(commit: false), tx: "A", .ok(.transactionEnd)),
            .events("w", []),
            .req("w", .resetWatches, .ok(.resetWatches)),
            .write("d0", "/tw/c", "1"),
            .events("w", []),
        ]),
]

/// The whole table, quotas included.
package let allConversations =
    permissionConversations + transactionConversations + watchConversations + quotaConversations
