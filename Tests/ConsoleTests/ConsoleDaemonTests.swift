import ConsoleBackend
import Synchronization
import Testing
import XenCore
import XenStoreClient
import XenStoreServer

/// The xenconsoled-style daemon: discovery while running, isolation of a hostile guest.
@Suite struct ConsoleDaemonTests {
    /// A daemon in dom0 whose sinks record, one per console.
    final class Harness: Sendable {
        let rig = ConsoleRig()
        final class Sinks: Sendable {
            let byConsole = Mutex<[ConsoleID: RecordingSink]>([:])
        }
        let sinks = Sinks()
        let daemon: ConsoleDaemon
        let running: Task<Void, any Error>

        /// `typing`: what each console's sink types before it reads.
        init(typing: [UInt8] = []) {
            let dom0 = rig.hypervisor.dom0
            let sinks = self.sinks
            daemon = ConsoleDaemon(xenstore: rig.dom0, grantTable: dom0.grantTable, eventChannel: dom0.eventChannel) {
                id in
                let sink = RecordingSink(typing: typing)
                sinks.byConsole.withLock { $0[id] = sink }
                return sink
            }
            let daemon = self.daemon
            running = Task { try await daemon.run() }
        }

        func received(_ id: ConsoleID) -> [UInt8] { sinks.byConsole.withLock { $0[id] }?.received ?? [] }

        /// Waits (yielding) until console `id`'s sink holds `count` bytes.
        func waitForBytes(_ id: ConsoleID, count: Int) async {
            while received(id).count < count { await Task.yield() }
        }

        func stop() async {
            running.cancel()
            _ = await running.result
        }
    }

    /// The next event satisfying `match`, skipping others.
    static func next(
        _ iterator: inout AsyncStream<ConsoleDaemonEvent>.Iterator, _ match: (ConsoleDaemonEvent) -> Bool
    ) async -> ConsoleDaemonEvent? {
        while let event = await iterator.next() {
            if match(event) { return event }
        }
        return nil
    }

    static func isAttached(_ id: ConsoleID) -> (ConsoleDaemonEvent) -> Bool {
        { event in
            if case .attached(let session) = event { return session.id == id }
            return false
        }
    }

    static func isDetached(_ id: ConsoleID) -> (ConsoleDaemonEvent) -> Bool {
        { event in
            if case .detached(let detached, _) = event { return detached == id }
            return false
        }
    }

    @Test func domainsIntroducedAndReleasedWhileRunning() async throws {
        let harness = Harness()
        let rig = harness.rig
        var events = harness.daemon.events.makeAsyncIterator()

        // Guest A boots with a primary console after the daemon started.
        let guestA = try await rig.makeGuest()
        let frontA = try await rig.bootPrimaryConsole(guestA)
        try await frontA.write(Array("A: booting\n".utf8))
        rig.server.introduceDomain(guestA.id)
        let primaryA = ConsoleID(domain: guestA.id, device: .primary)
        #expect(await Self.next(&events, Self.isAttached(primaryA)) != nil)
        await harness.waitForBytes(primaryA, count: 11)
        #expect(harness.received(primaryA) == Array("A: booting\n".utf8))

        // Guest B arrives with an extra console (served through the xenbus handshake).
        let guestB = try await rig.makeGuest()
        let extraB = ConsoleID(domain: guestB.id, device: .extra(1))
        try await ConsoleToolstack.createDevice(extraB, xenstore: rig.dom0)
        rig.server.introduceDomain(guestB.id)
        let frontB = try await ConsoleFrontend.connect(
            domain: guestB.id, devid: 1, xenstore: guestB.xenstore, gntshr: guestB.domain.openGntshr(),
            eventChannel: guestB.domain.eventChannel)
        #expect(await Self.next(&events, Self.isAttached(extraB)) != nil)
        try await frontB.write(Array("B: hello\n".utf8))
        await harness.waitForBytes(extraB, count: 9)

        // Guest A is destroyed and released: its console goes, B's stays.
        rig.hypervisor.destroyDomain(guestA.id)
        try await rig.dom0.immediate { handle throws(XenStoreError) in
            try await handle.remove("/local/domain/\(guestA.id.rawValue)")
        }
        _ = rig.server.releaseDomain(guestA.id)
        guard case .detached(_, let reason)? = await Self.next(&events, Self.isDetached(primaryA)) else {
            Issue.record("no detach event for \(primaryA)")
            return
        }
        #expect(reason == nil)
        try await frontB.write(Array("B: still here\n".utf8))
        await harness.waitForBytes(extraB, count: 9 + 14)
        #expect(harness.received(extraB) == Array("B: hello\nB: still here\n".utf8))
        #expect(await harness.daemon.servedConsoles == [extraB])

        await frontB.close()
        #expect(await Self.next(&events, Self.isDetached(extraB)) != nil)
        await harness.stop()
    }

    @Test func maliciousIndicesDisconnectOnlyThatConsole() async throws {
        let harness = Harness()
        let rig = harness.rig
        var events = harness.daemon.events.makeAsyncIterator()
        let good = try await rig.makeGuest()
        let evil = try await rig.makeGuest()
        let goodFront = try await rig.bootPrimaryConsole(good)
        let evilFront = try await rig.bootPrimaryConsole(evil)
        rig.server.introduceDomain(good.id)
        rig.server.introduceDomain(evil.id)
        let goodID = ConsoleID(domain: good.id, device: .primary)
        let evilID = ConsoleID(domain: evil.id, device: .primary)
        // Both attach, in either order.
        var attached: Set<ConsoleID> = []
        while attached.count < 2 {
            guard
                case .attached(let session)? = await Self.next(
                    &events, { if case .attached = $0 { true } else { false } })
            else { break }
            attached.insert(session.id)
        }
        #expect(attached == [goodID, evilID])

        // The evil guest claims to have produced 5000 bytes into a 2048-byte ring, and kicks.
        try #require(evilFront.connection.page).setUInt32(5000, at: ConsoleRingLayout.outProdOffset)
        try evil.domain.eventChannel.notify(evilFront.localPort)
        guard case .detached(_, let reason)? = await Self.next(&events, Self.isDetached(evilID)) else {
            Issue.record("the evil console was not disconnected")
            return
        }
        guard case .protocolViolation(.producerOutOfRange(ring: .output, producer: 5000, _, size: 2048))? = reason
        else {
            Issue.record("unexpected reason \(String(describing: reason))")
            return
        }
        #expect(await harness.daemon.failedConsoles == [evilID])

        // The good guest is unaffected.
        let message = Array("good guest keeps printing\n".utf8)
        try await goodFront.write(message)
        await harness.waitForBytes(goodID, count: message.count)
        #expect(harness.received(goodID) == message)
        #expect(await harness.daemon.servedConsoles == [goodID])
        await harness.stop()
        await goodFront.close()
        await evilFront.close()
    }

    /// The guest's own index on its primary console, `in_cons`, moved 5000 past `in_prod` (its kernel owns the
    /// page): the daemon's first input write must fail with a typed error and drop that console, never write
    /// outside the 1024-byte input ring (the real-Xen `hostile` group does the same to a PV guest's page).
    @Test func aBadInputConsumerDisconnectsThePrimaryConsole() async throws {
        let harness = Harness(typing: Array("x".utf8))
        let rig = harness.rig
        var events = harness.daemon.events.makeAsyncIterator()
        let evil = try await rig.makeGuest()
        let evilFront = try await rig.bootPrimaryConsole(evil)
        let page = try #require(evilFront.connection.page)
        let inProd = page.uint32(at: ConsoleRingLayout.inProdOffset)
        page.setUInt32(inProd &+ 5000, at: ConsoleRingLayout.inConsOffset)
        let before = (0..<ConsoleRingLayout.minimumPageSize).map { page.uint8(at: $0) }
        rig.server.introduceDomain(evil.id)
        let evilID = ConsoleID(domain: evil.id, device: .primary)
        guard case .detached(_, let reason)? = await Self.next(&events, Self.isDetached(evilID)) else {
            Issue.record("the console was not disconnected")
            return
        }
        guard case .protocolViolation(.consumerOutOfRange(ring: .input, producer: inProd, _, size: 1024))? = reason
        else {
            Issue.record("unexpected reason \(String(describing: reason))")
            return
        }
        #expect(await harness.daemon.failedConsoles == [evilID])
        // Nothing was written to the page: not the typed byte, not an index.
        #expect((0..<ConsoleRingLayout.minimumPageSize).map { page.uint8(at: $0) } == before)
        await harness.stop()
        await evilFront.close()
    }
}
