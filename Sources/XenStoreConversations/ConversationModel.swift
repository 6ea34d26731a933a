package import XenCore
package import XenStoreProtocol
package import XenStoreServer

// The data model of the conversation table, kept free of the test framework: XenStoreServerTests plays the
// table against XenStoreServer, and the real-Xen runner (Sources/xen-test-runner) replays the very same table
// against the real daemons.

/// One scripted exchange with xenstored: `(connection (a domain), transaction, request) → expected reply`,
/// or a check of the watch events a connection received. Kept as plain data so the same table can be
/// replayed against another xenstored (a real one, through a wire client).
package struct ConversationStep: Sendable, CustomStringConvertible {
    /// What the step does.
    package enum Action: Sendable {
        /// Send `request` (in the named transaction, if any) and expect `reply`.
        case request(XenStoreRequest, transaction: String?, reply: XenStoreReply)
        /// Start a transaction and bind its id to the label.
        case begin(label: String)
        /// The watch events received since the last check, in order.
        case events([XenStoreReply])
    }
    /// The label of the connection the step uses.
    package var connection: String
    /// What the step does on it.
    package var action: Action

    package var description: String { "\(connection): \(action)" }

    static func req(
        _ connection: String, _ request: XenStoreRequest, tx: String? = nil, _ reply: XenStoreReply
    ) -> ConversationStep {
        ConversationStep(connection: connection, action: .request(request, transaction: tx, reply: reply))
    }
    static func write(_ connection: String, _ path: String, _ value: String, tx: String? = nil) -> ConversationStep {
        req(connection, .write(path: path, value: Array(value.utf8)), tx: tx, .ok(.write))
    }
    static func read(_ connection: String, _ path: String, tx: String? = nil, _ value: String) -> ConversationStep {
        req(connection, .read(path: path), tx: tx, .value(value))
    }
    static func fails(
        _ connection: String, _ request: XenStoreRequest, tx: String? = nil, _ error: XenStoreErrorName
    ) -> ConversationStep {
        req(connection, request, tx: tx, .error(error))
    }
    static func begin(_ connection: String, _ label: String) -> ConversationStep {
        ConversationStep(connection: connection, action: .begin(label: label))
    }
    static func commit(_ connection: String, _ label: String, _ reply: XenStoreReply = .ok(.transactionEnd))
        -> ConversationStep
    {
        req(connection, .transactionEnd(commit: true), tx: label, reply)
    }
    static func events(_ connection: String, _ events: [XenStoreReply]) -> ConversationStep {
        ConversationStep(connection: connection, action: .events(events))
    }
}

/// A named script: which connections (label → domain) exist, the server's quotas, the steps.
package struct Conversation: Sendable, CustomStringConvertible {
    /// What the conversation shows (the test's name).
    package var name: String
    /// The connections, label → domain.
    package var connections: [String: DomainID]
    /// The server's quotas.
    package var quotas = XenStoreQuotas()
    /// The steps, in order.
    package var steps: [ConversationStep]
    package var description: String { name }
}

/// `.watchEvent(path:token:)` shorthand.
package func event(_ path: String, _ token: String) -> XenStoreReply { .watchEvent(path: path, token: token) }

extension XenStoreReply {
    /// `.read` of a UTF-8 string.
    package static func value(_ text: String) -> XenStoreReply { .read(Array(text.utf8)) }
}
