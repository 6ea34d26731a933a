import Testing
import XenCore
import XenStoreClient
import XenStoreServer

/// `wait`, watch sequences, suspend/resume and connection loss against `XenStoreServer`.
@Suite struct ServerWatchTests {
    @Test(arguments: Via.allCases)
    func waitReturnsWhenAnotherClientSetsTheCondition(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (waiter, counting) = try rig.client()
        let (writer, _) = try rig.client()
        let waiting = Task {
            try await waiter.wait { h in
                guard let state = try? await h.read("/backend/state"), state == "4" else { throw XenStoreError.again }
                return try await h.read("/backend/ring-ref")
            }
        }
        try await writer.immediate { h in try await h.write("/backend/state", "2") }
        try await writer.transaction { h in
            try await h.write("/backend/ring-ref", "8")
            try await h.write("/backend/state", "4")
        }
        #expect(try await waiting.value == "8")
        #expect(counting.watchCount == 0)  // its watches were removed on return
        await waiter.close()
        await writer.close()
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func watchCountStaysFlatOverAThousandIterations(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (waiter, counting) = try rig.client()
        let (writer, _) = try rig.client()
        try await writer.immediate { h in
            try await h.write("/flat/value", "0")
            try await h.write("/flat/other", "x")
        }
        // One long wait re-run for each of 1,000 writes: it reads the same two paths every time.
        let waiting = Task {
            try await waiter.wait { h in
                _ = try await h.read("/flat/other")
                guard try await h.read("/flat/value") == "1000" else { throw XenStoreError.again }
                return counting.maximumWatchCount
            }
        }
        for value in 1...1000 {
            try await writer.immediate { h in try await h.write("/flat/value", String(value)) }
        }
        #expect(try await waiting.value == 2)
        // And 1,000 separate short waits, each cleaning up after itself.
        for value in 1...1000 {
            let target = String(value)
            async let done: Void = waiter.wait { h in
                guard (try? await h.read("/flat/round")) == target else { throw XenStoreError.again }
            }
            try await writer.immediate { h in try await h.write("/flat/round", target) }
            try await done
            #expect(counting.watchCount == 0)
        }
        #expect(counting.maximumWatchCount <= 2)
        await waiter.close()
        await writer.close()
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func waitWatchesOnlyWhatTheLastRunRead(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (waiter, counting) = try rig.client()
        let (writer, _) = try rig.client()
        try await writer.immediate { h in try await h.write("/switch/which", "a") }
        // The body reads /switch/which and then the path it names; as it moves a → b → c, the old watch goes.
        let waiting = Task {
            try await waiter.wait { h in
                let which = try await h.read("/switch/which")
                guard (try? await h.read("/switch/\(which)")) == "ready" else { throw XenStoreError.again }
                return which
            }
        }
        for name in ["b", "c"] {
            try await writer.immediate { h in try await h.write("/switch/which", name) }
        }
        try await writer.immediate { h in try await h.write("/switch/c", "ready") }
        #expect(try await waiting.value == "c")
        #expect(counting.maximumWatchCount <= 3)
        #expect(counting.watchCount == 0)
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func cancellingAWaitRemovesItsWatches(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (waiter, counting) = try rig.client()
        let waiting = Task {
            try await waiter.wait { h in
                _ = try? await h.read("/never/a")
                _ = try? await h.read("/never/b")
                throw XenStoreError.again
            }
        }
        // Let it register its watches: the watch acknowledgement round trips make progress observable.
        while counting.watchCount < 2 { await Task.yield() }
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(counting.watchCount == 0)
        // The connection is still fine.
        try await waiter.immediate { h in try await h.write("/after", "ok") }
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func watchEventsArriveInOrder(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (watcher, counting) = try rig.client()
        let (writer, _) = try rig.client()
        let events = try await watcher.watches("/ordered")
        var iterator = events.makeAsyncIterator()
        #expect(try await iterator.next()?.path == "/ordered")  // the initial firing
        for index in 0..<100 {
            try await writer.immediate { h in try await h.write("/ordered/k\(index)", "v") }
        }
        for index in 0..<100 {
            #expect(try await iterator.next()?.path == "/ordered/k\(index)")
        }
        events.cancel()
        #expect(try await iterator.next() == nil)
        // Ending the sequence unwatches (asynchronously): wait for the UNWATCH to be sent.
        while counting.watchCount != 0 { await Task.yield() }
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func suspendAndResumeWithQueuedRequestsAndManualWatches(via: Via) async throws {
        let rig = try await ServerRig(via)
        let (client, _) = try rig.client()
        let (writer, _) = try rig.client()
        let events = client.events(token: "manual")
        var iterator = events.makeAsyncIterator()
        try await client.immediate { h in try await h.watch("/manual", token: "manual") }
        #expect(try await iterator.next()?.path == "/manual")

        await client.suspend()
        let queued = (0..<10).map { index in
            Task { try await client.immediate { h in try await h.write("/queued/\(index)", "v") } }
        }
        for _ in 0..<50 { await Task.yield() }
        #expect(rig.server.children(of: "/queued") == nil)  // parked, not sent
        // Resume over a brand-new connection: the manual watch must be registered there again.
        try await client.resume(transport: try rig.transport())
        for task in queued { try await task.value }
        #expect(rig.server.children(of: "/queued")?.count == 10)
        #expect(try await iterator.next()?.path == "/manual")  // the re-registered watch's initial firing
        try await writer.immediate { h in try await h.write("/manual/x", "1") }
        #expect(try await iterator.next()?.path == "/manual/x")
        await client.close()
        await writer.close()
        await rig.shutDown()
    }

    @Test func resumeReconnectsThroughTheSocketPath() async throws {
        let rig = try await ServerRig(.unixSocket)
        let client = try await XenStoreClient.connect(socketPath: rig.socketPath)
        try await client.immediate { h in try await h.write("/r", "1") }
        let before = rig.server.connectionCount
        await client.suspend()
        try await client.resume()
        #expect(try await client.immediate { h in try await h.read("/r") } == "1")
        #expect(rig.server.connectionCount == before)  // old connection closed, new one open
        await client.close()
        await rig.shutDown()
    }

    @Test(arguments: Via.allCases)
    func serverKilledMidRequestFailsEverythingPromptly(via: Via) async throws {
        let rig = try await ServerRig(via)
        let raw = try rig.transport()
        let client = XenStoreClient(transport: raw)
        try await client.immediate { h in try await h.write("/k", "v") }
        let events = try await client.watches("/k")
        let waiting = Task {
            try await client.wait { h in
                _ = try await h.read("/k")
                throw XenStoreError.again
            }
        }
        let readers = (0..<20).map { _ in
            Task { () -> Int in
                var failures = 0
                for _ in 0..<200 {
                    do {
                        _ = try await client.immediate { h in try await h.read("/k") }
                    } catch let error as XenStoreError {
                        #expect(error == .disconnected)
                        failures += 1
                    }
                }
                return failures
            }
        }
        for _ in 0..<10 { await Task.yield() }
        // Kill the server side of the connection.
        switch via {
        case .inProcess: await raw.close()
        case .unixSocket: for listener in rig.listeners { await listener.close() }
        }
        var total = 0
        for reader in readers { total += try await reader.value }
        #expect(total > 0)
        await #expect(throws: XenStoreError.disconnected) { try await waiting.value }
        await #expect(throws: XenStoreError.disconnected) {
            for try await _ in events {}
        }
        await #expect(throws: XenStoreError.disconnected) {
            try await client.immediate { h in try await h.read("/k") }
        }
        await rig.shutDown()
    }
}
