import Testing
import XenStoreConversations

@Suite struct ConversationTests {
    @Test(arguments: permissionConversations) func permissions(_ conversation: Conversation) async throws {
        try await play(conversation)
    }
    @Test(arguments: transactionConversations) func transactions(_ conversation: Conversation) async throws {
        try await play(conversation)
    }
    @Test(arguments: watchConversations) func watches(_ conversation: Conversation) async throws {
        try await play(conversation)
    }
    @Test(arguments: quotaConversations) func quotas(_ conversation: Conversation) async throws {
        try await play(conversation)
    }
}
