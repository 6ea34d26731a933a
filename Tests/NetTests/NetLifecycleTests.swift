import NetBack
import NetFront
import NetifProtocol
import NetworkDevice
import SimulatedHypervisor
import Testing
import XenCore
import Xenbus

/// The whole xenbus state machine on the simulator: what mirage-net-xen's open PR #121 and issues #61/#89
/// ask for (a close cycle before connecting, a frontend jumping to Closed, a runtime close answered from
/// either side, the next connection of the same vif served) and resources released every time.
@Suite struct NetLifecycleTests {
    /// One frame each way, checked.
    static func exchange(_ front: NetFront, _ back: NetBack, seed: UInt32) async throws {
        var atBack = back.listen().makeAsyncIterator()
        var atFront = front.listen().makeAsyncIterator()
        try await front.write(NetworkFrame(data: testFrame(size: 600, seed: seed, from: front.mac, to: back.mac)))
        let received = try #require(await atBack.next())
        #expect(testSeed(received.data) == seed && isTestFrame(received.data, from: front.mac, to: back.mac))
        try await back.write(NetworkFrame(data: testFrame(size: 700, seed: seed + 1, from: back.mac, to: front.mac)))
        let delivered = try #require(await atFront.next())
        #expect(testSeed(delivered.data) == seed + 1)
    }

    /// Every grant of the frontend back in its pool, nothing mapped in the backend's name.
    static func expectReleased(_ harness: NetHarness, initialFree: Int) async throws {
        try await waitUntil { harness.frontDomain.grantTable.refs.freeCount == initialFree }
    }

    @Test func closeCycleBeforeConnectThenConnect() async throws {
        let harness = try NetHarness()
        let (back, serving) = try await harness.startBackend()
        let store = harness.frontStore
        let backend = harness.nodes.backendPath
        let front = harness.nodes.frontendPath
        // What Windows' xenvif does before it connects: Closing, Closed, Initialising, each answered.
        #expect(try await store.waitForState(of: backend) { $0 == .initWait } == .initWait)
        try await store.write(front + "/state", XenbusState.closing.xenstoreValue)
        #expect(try await store.waitForState(of: backend) { $0 != .initWait } == .closing)
        try await store.write(front + "/state", XenbusState.closed.xenstoreValue)
        #expect(try await store.waitForState(of: backend) { $0 != .closing } == .closed)
        try await store.write(front + "/state", XenbusState.initialising.xenstoreValue)
        #expect(try await store.waitForState(of: backend) { $0 != .closed } == .initWait)
        let netfront = try await harness.connectFront()
        try await waitUntil { back.negotiated != nil }
        try await Self.exchange(netfront, back, seed: 1)
        #expect(back.connectionCount == 1)
        try await harness.tearDown(netfront, back, serving)
    }

    @Test func frontendJumpingToClosedIsAnsweredAndTheVifServedAgain() async throws {
        let harness = try NetHarness()
        let initialFree = harness.frontDomain.grantTable.refs.freeCount
        let (first, back, serving) = try await harness.connect()
        try await Self.exchange(first, back, seed: 10)
        // The guest writes Closed straight from Connected (qvm-prefs netvm None does this).
        try await harness.frontStore.write(harness.nodes.frontendPath + "/state", XenbusState.closed.xenstoreValue)
        #expect(try await harness.store.waitForState(of: harness.nodes.backendPath) { $0 == .closed } == .closed)
        try await waitUntil { back.negotiated == nil }
        // The frontend object sees its backend leave and cleans up by itself.
        try await waitUntil { first.failure != nil }
        await #expect(throws: NetworkError.self) {
            try await first.write(NetworkFrame(data: testFrame(size: 100, seed: 0, from: first.mac, to: back.mac)))
        }
        await first.disconnect()
        try await Self.expectReleased(harness, initialFree: initialFree)
        // The same vif is served to the next frontend.
        let second = try await harness.connectFront()
        try await waitUntil { back.negotiated != nil }
        try await Self.exchange(second, back, seed: 20)
        #expect(back.connectionCount == 2)
        try await harness.tearDown(second, back, serving)
        try await Self.expectReleased(harness, initialFree: initialFree)
    }

    @Test func runtimeCloseByTheFrontendAndFiveReconnects() async throws {
        let harness = try NetHarness()
        let initialFree = harness.frontDomain.grantTable.refs.freeCount
        let (back, serving) = try await harness.startBackend()
        for cycle in 0..<5 {
            let front: NetFront
            do { front = try await harness.connectFront { $0.queues = 1 + cycle % 2 } } catch {
                Issue.record("cycle \(cycle): \(error); backend: \(back.lastBreak ?? "-")")
                throw error
            }
            try await waitUntil { back.negotiated?.queues == 1 + cycle % 2 }
            try await Self.exchange(front, back, seed: UInt32(cycle * 10))
            await front.disconnect()
            #expect(try await harness.store.state(of: harness.nodes.backendPath) == .closed)
            #expect(try await harness.store.read(harness.nodes.backendPath + "/frontend") != nil, "directory kept")
            try await Self.expectReleased(harness, initialFree: initialFree)
            #expect(back.negotiated == nil)
        }
        #expect(back.connectionCount == 5)
        await back.disconnect()
        try await serving.value
    }

    @Test func runtimeCloseByTheBackendIsAnsweredByTheFrontend() async throws {
        let harness = try NetHarness()
        let initialFree = harness.frontDomain.grantTable.refs.freeCount
        let (front, back, serving) = try await harness.connect()
        try await Self.exchange(front, back, seed: 5)
        let listening = Task { () -> Int in
            var count = 0
            for await _ in front.listen() { count += 1 }
            return count
        }
        await back.disconnect()
        try await serving.value
        // Closing, then Closed once the frontend closed (or the backend's close timeout passed): never deleted.
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .closed)
        // The frontend answers Closing on its own watch: on a machine loaded enough (the whole suite under
        // ASan on 2 cores) that may come after the backend's 10 s close timeout, so wait for it.
        try await waitUntil(seconds: 60) {
            try await harness.store.state(of: harness.nodes.frontendPath) == .closed
        }
        #expect(try await harness.store.read(harness.nodes.backendPath + "/frontend") == harness.nodes.frontendPath)
        try await waitUntil { front.failure != nil }
        #expect(front.failure?.contains("Closing") == true)
        #expect(await listening.value == 0, "the listener's sequence ends")
        try await Self.expectReleased(harness, initialFree: initialFree)
        await #expect(throws: NetworkError.disconnected) {
            try await back.write(NetworkFrame(data: testFrame(size: 100, seed: 0, from: back.mac, to: front.mac)))
        }
    }

    @Test func aBackendLeftConnectedByAnEarlierFrontendIsLedThroughClose() async throws {
        let harness = try NetHarness()
        let (back, serving) = try await harness.startBackend()
        // An earlier frontend connected and then died without closing.
        let dead = try await ScriptedFrontend(harness)
        try await dead.connect()
        try await waitUntil { back.negotiated != nil }
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .connected)
        // A new NetFront finds the backend Connected: Closing, Closed, Initialising, then its own connection.
        let front = try await harness.connectFront()
        try await waitUntil { back.connectionCount == 2 && back.negotiated != nil }
        try await Self.exchange(front, back, seed: 30)
        try await harness.tearDown(front, back, serving)
    }

    @Test func unplugAndDirectoryRemovalEndServing() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect()
        try await harness.nodes.unplug(in: harness.store)
        await front.disconnect()
        try await serving.value
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .closed)

        let other = try NetHarness(handle: 1)
        let (front2, back2, serving2) = try await other.connect()
        try await other.store.remove(other.nodes.frontendPath)
        try await serving2.value
        try await waitUntil { front2.failure != nil }
        await front2.disconnect()
        _ = back2
        _ = back
    }
}
