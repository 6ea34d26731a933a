import XenCore
import XenStoreConversations
import XenStoreProtocol

/// Replays XenStoreServer's conversation table against the real daemon. Only conversations whose
/// connections are all dom0 can run here: a socket connection to the real daemon is always privileged, and
/// an unprivileged connection needs a real guest. Each conversation runs on a fresh set of connections;
/// the nodes it created at the top level are removed afterwards. A reply that differs from the table fails
/// the check unless the difference is listed in `deliberate` with its reason.
enum ConversationReplay {
    /// Differences from the table that are understood: (conversation name prefix, step index) → why.
    /// Differences from the table that are understood: (daemon or "" for both, conversation name prefix,
    /// step index) → why. XenStoreServer follows C xenstored where the two daemons disagree.
    static let deliberate: [(daemon: String, conversation: String, step: Int, why: String)] = [
        // The real daemons introduce only domains that exist (they map the domain's ring page): EINVAL for
        // domain 9, nothing to release, no @introduceDomain/@releaseDomain events. XenStoreServer simulates
        // domains without rings and accepts the introduce, which its own tests rely on.
        ("", "@introduceDomain and @releaseDomain", 3, "introduce of a missing domain: EINVAL"),
        ("", "@introduceDomain and @releaseDomain", 4, "no @introduceDomain event (nothing introduced)"),
        ("", "@introduceDomain and @releaseDomain", 5, "second introduce: EINVAL, as the first"),
        ("xenstored", "@introduceDomain and @releaseDomain", 7, "release of a domain never introduced: ENOENT"),
        ("oxenstored", "@introduceDomain and @releaseDomain", 7, "release of a domain never introduced: EINVAL"),
        ("", "@introduceDomain and @releaseDomain", 8, "no @releaseDomain event (nothing released)"),
        // oxenstored-only behaviours; XenStoreServer answers as C xenstored does.
        ("oxenstored", "path rules", 3, "oxenstored reads the special node @introduceDomain (empty value)"),
        (
            "oxenstored", "path rules", 4,
            "oxenstored accepts RM / (and keeps the root; asked in an aborted transaction)"
        ),
        ("oxenstored", "abort, unknown and finished", 4, "oxenstored: EIO for a finished transaction id"),
        ("oxenstored", "abort, unknown and finished", 5, "oxenstored: EIO for an unknown transaction id"),
        ("oxenstored", "abort, unknown and finished", 10, "oxenstored: EIO for a transaction reset away"),
        // oxenstored commits a transaction whose nodes changed meanwhile when it can merge them ("coalesce");
        // C xenstored (and XenStoreServer, whose quotas at commit rely on it) answers EAGAIN.
        ("oxenstored", "creating reads the parent", 6, "oxenstored merges a child created under a changed parent"),
        ("oxenstored", "creating reads the parent", 7, "oxenstored: so /t/c exists too"),
        ("oxenstored", "creating reads the parent", 11, "oxenstored merges a write of a node changed meanwhile"),
        ("oxenstored", "creating reads the parent", 12, "oxenstored: so the transaction's value won"),
        ("oxenstored", "creating reads the parent", 16, "oxenstored merges a write of a node that gained a child"),
        ("oxenstored", "creating reads the parent", 17, "oxenstored: so the transaction's value won"),
    ]

    static func run(_ report: Report, daemon: String) async {
        let replayable = allConversations.filter { $0.connections.values.allSatisfy { $0 == .dom0 } }
        for conversation in replayable {
            await report.check("conversation: \(conversation.name)", limit: 60) {
                let differences = await blocking { replay(conversation) }
                var unexplained: [String] = []
                var explained: [String] = []
                for (index, text) in differences {
                    if let reason = deliberate.first(where: {
                        ($0.daemon.isEmpty || $0.daemon == daemon) && conversation.name.hasPrefix($0.conversation)
                            && $0.step == index
                    }) {
                        explained.append("step \(index): \(reason.why)")
                    } else {
                        unexplained.append(text)
                    }
                }
                if !explained.isEmpty { report.detail("deliberate: " + explained.joined(separator: "; ")) }
                try require(unexplained.isEmpty, unexplained.joined(separator: " | "))
            }
        }
        let skipped = allConversations.count - replayable.count
        report.check(
            "conversation: \(skipped) of \(allConversations.count) need unprivileged connections (no guest here)"
        ) {
            try require(!replayable.isEmpty, "nothing replayable")
        }
    }

    /// The differing steps, as (index, "step N: sent → got X, table says Y").
    static func replay(_ conversation: Conversation) -> [(Int, String)] {
        var differences: [(Int, String)] = []
        do {
            var connections: [String: RawXenstoreConnection] = [:]
            for label in conversation.connections.keys { connections[label] = try RawXenstoreConnection() }
            guard let any = connections.values.first else { return [] }
            // The real tree is not empty: note what exists so listings of "/" can be compared.
            guard case .directory(let baseline) = try any.call(.directory(path: "/")) else {
                return [(-1, "cannot list /")]
            }
            var transactions: [String: UInt32] = [:]
            for (index, step) in conversation.steps.enumerated() {
                guard let connection = connections[step.connection] else { continue }
                switch step.action {
                case .request(let request, let label, let expected):
                    let tid = label.map { transactions[$0] ?? 0xDEAD } ?? 0
                    var reply: XenStoreReply
                    if case .rm(path: "/") = request, label == nil {
                        // oxenstored accepts RM / and empties the whole tree (`domid` and every home with
                        // it), which broke every later group of the boot: ask inside a transaction, then
                        // abort it. C xenstored refuses it there as outside (EINVAL).
                        guard case .transactionStarted(let scratch) = try connection.call(.transactionStart) else {
                            return [(index, "step \(index): no transaction for RM /")]
                        }
                        reply = try connection.call(request, transaction: scratch)
                        _ = try connection.call(.transactionEnd(commit: false), transaction: scratch)
                    } else {
                        reply = try connection.call(request, transaction: tid)
                    }
                    if case .directory(path: "/") = request, case .directory(let names) = reply {
                        reply = .directory(names.filter { !baseline.contains($0) })
                    }
                    if reply != expected {
                        differences.append((index, "step \(index) \(request.type): got \(reply), table \(expected)"))
                    }
                case .begin(let label):
                    let reply = try connection.call(.transactionStart)
                    guard case .transactionStarted(let tid) = reply else {
                        differences.append((index, "step \(index) TRANSACTION_START: got \(reply)"))
                        return differences
                    }
                    transactions[label] = tid
                case .events(let expected):
                    let received = try connection.drainEvents(
                        expecting: expected.count, milliseconds: expected.isEmpty ? 300 : 2000)
                    if !sameEvents(received, expected) {
                        differences.append((index, "step \(index) events: got \(received), table \(expected)"))
                    }
                }
            }
            // Clean up: remove every top-level node the conversation added; release domains it introduced.
            if case .directory(let now) = try any.call(.directory(path: "/")) {
                for name in now where !baseline.contains(name) { _ = try any.call(.rm(path: "/" + name)) }
            }
        } catch {
            differences.append((-1, "replay broke: \(error)"))
        }
        return differences
    }

    /// Events compare in order per token; between different watches the protocol promises no order (C
    /// xenstored fires a removed subtree's deeper watches first, the table lists them top-down).
    static func sameEvents(_ received: [XenStoreReply], _ expected: [XenStoreReply]) -> Bool {
        func byToken(_ events: [XenStoreReply]) -> [String: [String]] {
            var result: [String: [String]] = [:]
            for case .watchEvent(let path, let token) in events { result[token, default: []].append(path) }
            return result
        }
        return received.count == expected.count && byToken(received) == byToken(expected)
    }
}
