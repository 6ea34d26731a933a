import XenCore
import XenStoreProtocol
import XenStoreServer

// The data model of XenStoreServer's conversation table (Tests/XenStoreServerTests/Conversation.swift), so
// the runner can replay the very same table (ConversationTable.swift is a link to the test file) against the
// real daemons. Only the data types are mirrored here; the table itself is not copied.

/// One scripted exchange: `(connection, transaction, request) → expected reply`, or expected watch events.
struct ConversationStep: Sendable, CustomStringConvertible {
    enum Action: Sendable {
        case request(XenStoreRequest, transaction: String?, reply: XenStoreReply)
        case begin(label: String)
        case events([XenStoreReply])
    }
    var connection: String
    var action: Action

    var description: String { "\(connection): \(action)" }

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

/// A named script: its connections (label → domain), the in-memory server's quotas, the steps.
struct Conversation: Sendable, CustomStringConvertible {
    var name: String
    var connections: [String: DomainID]
    var quotas = XenStoreQuotas()
    var steps: [ConversationStep]
    var description: String { name }
}

/// A watch event as the table writes it.
func event(_ path: String, _ token: String) -> XenStoreReply { .watchEvent(path: path, token: token) }

extension XenStoreReply {
    /// A READ reply carrying `text`, as the table writes it.
    static func value(_ text: String) -> XenStoreReply { .read(Array(text.utf8)) }
}
