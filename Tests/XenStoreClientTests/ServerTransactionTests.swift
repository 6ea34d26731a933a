import Testing
import XenCore
import XenStoreClient
import XenStoreServer

/// Transactions against `XenStoreServer`: conflicts retried to an exact result, aborts really aborted.
@Suite struct ServerTransactionTests {
    struct Boom: Error {}

    @Test(arguments: Via.allCases)
    func sixteenTasksIncrementOneCounterExactly(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (client, counting) = try rig.client()
        try await client.immediate { h in try await h.write("/counter", "0") }
        let tasks = 16
        let increments = 10
        let policy = XenStoreRetryPolicy(
            maxAttempts: 1000, initialBackoff: .microseconds(20), maxBackoff: .milliseconds(2))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<tasks {
                group.addTask {
                    for _ in 0..<increments {
                        try await client.transaction(retryPolicy: policy) { h in
                            let value = Int(try await h.read("/counter")) ?? -1
                            try await h.write("/counter", String(value + 1))
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try await client.immediate { h in try await h.read("/counter") } == String(tasks * increments))
        // Conflicts happened and were retried: more transaction ends than increments (not asserted exactly).
        let ends = counting.sent.filter { $0.type == .transactionEnd }.count
        #expect(ends >= tasks * increments)
        await client.close()
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func bodyThrowingAbortsWithEndF(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (client, counting) = try rig.client()
        await #expect(throws: Boom.self) {
            try await client.transaction { h in
                try await h.write("/aborted", "never")
                throw Boom()
            }
        }
        #expect(rig.server.value(at: "/aborted") == nil)
        let end = try #require(counting.sent.last)
        #expect(end.type == .transactionEnd && payloadStrings(end.payload) == ["F"] && end.transactionID != 0)
        // The transaction is gone from the server: committing it again is refused.
        let stale = XenStorePacket(
            type: .transactionEnd, requestID: 77, transactionID: end.transactionID, payload: nulStrings("T"))
        let raw = try rig.transport()
        try await raw.write(stale.bytes)
        var parser = XenStorePacketParser()
        var reply: XenStorePacket?
        while reply == nil, let bytes = try await raw.read() {
            parser.append(bytes)
            reply = try parser.next()
        }
        #expect(reply?.type == .error)
        await raw.close()
        await client.close()
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func committedWritesAreVisibleTogether(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (client, _) = try rig.client()
        let value = try await client.transaction { h in
            try await h.write("/tx/a", "1")
            try await h.write("/tx/b", "2")
            #expect(rig.server.value(at: "/tx/a") == nil)  // not before the commit
            return try await h.read("/tx/a")
        }
        #expect(value == "1")
        #expect(rig.server.value(at: "/tx/b") == Array("2".utf8))
        await client.close()
        await rig.shutDown()
    }
}
