import Testing
import XenCore
import XenStoreConversations
import XenStoreProtocol
import XenStoreServer

/// Plays a conversation against a fresh `XenStoreServer` over in-process connections.
func play(_ conversation: Conversation) async throws {
    let server = XenStoreServer(quotas: conversation.quotas)
    var clients: [String: TestClient] = [:]
    for (label, domain) in conversation.connections {
        clients[label] = TestClient(server.connect(domain: domain))
    }
    var transactions: [String: UInt32] = [:]
    for (index, step) in conversation.steps.enumerated() {
        let client = try #require(clients[step.connection], "step \(index): no connection \(step.connection)")
        switch step.action {
        case .request(let request, let label, let expected):
            // An unbound label stands for a transaction id the server never handed out.
            let tid = label.map { transactions[$0] ?? 0xDEAD } ?? 0
            let reply = try await client.call(request, transaction: tid)
            #expect(reply == expected, "step \(index): \(step)")
        case .begin(let label):
            let reply = try await client.call(.transactionStart)
            guard case .transactionStarted(let tid) = reply else {
                Issue.record("step \(index): TRANSACTION_START answered \(reply)")
                return
            }
            transactions[label] = tid
        case .events(let expected):
            let received = try await client.drainEvents()
            #expect(received == expected, "step \(index): \(step)")
        }
    }
    #expect(server.check().isEmpty)
}
