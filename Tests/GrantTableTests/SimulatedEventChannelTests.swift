import EventChannel
import SimulatedHypervisor
import Testing
import XenCore

@Suite struct SimulatedEventChannelTests {
    let hypervisor = SimulatedHypervisor()
    let front: SimulatedDomain
    let back: SimulatedDomain

    init() throws {
        front = try hypervisor.createDomain(name: "front")
        back = try hypervisor.createDomain(name: "back")
    }

    /// Front offers an unbound port for back; back connects (what blkfront/blkback do via xenstore).
    func connect() throws -> (frontPort: EventChannelPort, backPort: EventChannelPort) {
        let frontPort = try front.eventChannel.bindUnboundPort(remote: back.id)
        let backPort = try back.eventChannel.bindInterdomain(remote: front.id, remotePort: frontPort)
        return (frontPort, backPort)
    }

    @Test func notificationsFlowBothWays() async throws {
        let (frontPort, backPort) = try connect()
        #expect(frontPort == 1)
        #expect(backPort == 1)
        #expect(front.eventChannel.status(frontPort)?.remote == back.id)
        #expect(front.eventChannel.status(frontPort)?.remotePort == backPort)

        var frontEvents = front.eventChannel.notifications(frontPort).makeAsyncIterator()
        var backEvents = back.eventChannel.notifications(backPort).makeAsyncIterator()
        try back.eventChannel.notify(backPort)
        #expect(await frontEvents.next() == frontPort)
        try front.eventChannel.notify(frontPort)
        #expect(await backEvents.next() == backPort)

        // A waiter already suspended is woken by the notify.
        let waiting = Task { await backEvents.next() }
        #expect(await eventually { back.eventChannel.waitingCount(backPort) == 1 })
        try front.eventChannel.notify(frontPort)
        #expect(await waiting.value == backPort)
    }

    @Test func aBurstOfNotifiesWakesExactlyOnce() async throws {
        let (frontPort, backPort) = try connect()
        var events = back.eventChannel.notifications(backPort).makeAsyncIterator()
        #expect(!back.eventChannel.isPending(backPort))
        for _ in 0..<5 { try front.eventChannel.notify(frontPort) }
        #expect(back.eventChannel.isPending(backPort))
        #expect(await events.next() == backPort)
        #expect(!back.eventChannel.isPending(backPort))

        // The next element needs a new notify: the waiter stays suspended until then.
        let next = Task { await events.next() }
        #expect(await eventually { back.eventChannel.waitingCount(backPort) == 1 })
        #expect(!back.eventChannel.isPending(backPort))
        try front.eventChannel.notify(frontPort)
        #expect(await next.value == backPort)
        #expect(!back.eventChannel.isPending(backPort))
    }

    @Test func bindingChecksDomainAndPortState() throws {
        let other = try hypervisor.createDomain(name: "other")
        let port = try front.eventChannel.bindUnboundPort(remote: back.id)
        #expect(throws: EventChannelError.permissionDenied(domain: front.id, port: port)) {
            _ = try other.eventChannel.bindInterdomain(remote: front.id, remotePort: port)
        }
        #expect(throws: EventChannelError.notUnbound(domain: front.id, port: 99)) {
            _ = try back.eventChannel.bindInterdomain(remote: front.id, remotePort: 99)
        }
        #expect(throws: EventChannelError.noSuchDomain(DomainID(55))) {
            _ = try back.eventChannel.bindInterdomain(remote: 55, remotePort: port)
        }
        _ = try back.eventChannel.bindInterdomain(remote: front.id, remotePort: port)
        #expect(throws: EventChannelError.notUnbound(domain: front.id, port: port)) {
            _ = try back.eventChannel.bindInterdomain(remote: front.id, remotePort: port)
        }
        #expect(throws: EventChannelError.invalidPort(42)) { try front.eventChannel.notify(42) }
        #expect(throws: EventChannelError.invalidPort(42)) { try front.eventChannel.unbind(42) }
    }

    @Test func notifyOnAnUnboundPortIsANoOp() async throws {
        let port = try front.eventChannel.bindUnboundPort(remote: back.id)
        try front.eventChannel.notify(port)
        #expect(!front.eventChannel.isPending(port))
    }

    @Test func unbindFinishesTheSequenceAndLeavesTheRemoteUnbound() async throws {
        let (frontPort, backPort) = try connect()
        var frontEvents = front.eventChannel.notifications(frontPort).makeAsyncIterator()
        let waiting = Task { await frontEvents.next() }
        #expect(await eventually { front.eventChannel.waitingCount(frontPort) == 1 })
        try front.eventChannel.unbind(frontPort)
        #expect(await waiting.value == nil)
        #expect(front.eventChannel.status(frontPort) == nil)

        // Back's port is unbound again, for front: notify is a no-op, and front may reconnect to it.
        #expect(back.eventChannel.status(backPort)?.remote == front.id)
        #expect(back.eventChannel.status(backPort)?.remotePort == nil)
        try back.eventChannel.notify(backPort)
        let again = try front.eventChannel.bindInterdomain(remote: back.id, remotePort: backPort)
        var backEvents = back.eventChannel.notifications(backPort).makeAsyncIterator()
        try front.eventChannel.notify(again)
        #expect(await backEvents.next() == backPort)

        // Iterating a port that is not bound finishes at once.
        var none = front.eventChannel.notifications(99).makeAsyncIterator()
        #expect(await none.next() == nil)
    }

    @Test func cancellingAWaiterEndsItsIteration() async throws {
        let (frontPort, _) = try connect()
        let waiting = Task {
            var events = front.eventChannel.notifications(frontPort).makeAsyncIterator()
            return await events.next()
        }
        #expect(await eventually { front.eventChannel.waitingCount(frontPort) == 1 })
        waiting.cancel()
        #expect(await waiting.value == nil)
        #expect(front.eventChannel.waitingCount(frontPort) == 0)
    }

    @Test func loopbackInOneDomainWorks() async throws {
        // What the dom0 self-test does with one domain as both ends.
        let dom0 = hypervisor.dom0.eventChannel
        let a = try dom0.bindUnboundPort(remote: .dom0)
        let b = try dom0.bindInterdomain(remote: .dom0, remotePort: a)
        #expect(a != b)
        var aEvents = dom0.notifications(a).makeAsyncIterator()
        var bEvents = dom0.notifications(b).makeAsyncIterator()
        try dom0.notify(b)
        #expect(await aEvents.next() == a)
        try dom0.notify(a)
        #expect(await bEvents.next() == b)
    }

    @Test func destroyingADomainClosesItsPortsAndUnbindsThePeers() async throws {
        let (frontPort, backPort) = try connect()
        let releases = hypervisor.domainReleases()
        var frontEvents = front.eventChannel.notifications(frontPort).makeAsyncIterator()
        #expect(hypervisor.destroyDomain(front.id))
        #expect(await frontEvents.next() == nil)
        #expect(back.eventChannel.status(backPort)?.remote == front.id)
        #expect(back.eventChannel.status(backPort)?.remotePort == nil)
        try back.eventChannel.notify(backPort)
        #expect(throws: EventChannelError.noSuchDomain(front.id)) {
            _ = try front.eventChannel.bindUnboundPort(remote: back.id)
        }
        var iterator = releases.makeAsyncIterator()
        let released = await iterator.next()
        #expect(released?.id == front.id)
        #expect(released?.uuid == front.uuid)
    }
}
