import Testing
import XenCore
import XenStoreClient
import XenStoreServer

/// Tasks preferring the connection's I/O thread as their executor: requests work, and tasks still run
/// once the connection (and with it the thread) is gone.
@Suite struct ClientExecutorTests {
    @Test func requestsFromTasksOnTheClientExecutor() async throws {
        let rig = try await ServerRig(.unixSocket)
        let client = try await XenStoreClient.connect(socketPath: rig.socketPath)
        let executor = try #require(client.executor)
        let total = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<64 {
                group.addTask(executorPreference: executor) {
                    for index in 0..<5 {
                        try await client.immediate { h in try await h.write("/exec/\(task)/\(index)", "\(index)") }
                        #expect(
                            try await client.immediate { h in try await h.read("/exec/\(task)/\(index)") } == "\(index)"
                        )
                    }
                    return 5
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(total == 320)
        await client.close()
        // The thread is gone; a task preferring it still runs (on the global executor) and fails typed.
        let after = Task(executorPreference: executor) {
            try await client.immediate { h in try await h.read("/exec/0/0") }
        }
        await #expect(throws: XenStoreError.disconnected) { try await after.value }
        #expect(XenStoreClient(transport: rig.server.connect()).executor == nil)
        await rig.shutDown()
    }
}
