import EventChannel
import Synchronization
import Testing
import XenCore

@testable import Vchan

/// Events lost below both ends (seen on Xen under QEMU TCG with libxenvchan on both ends): our re-check
/// timer makes up for the ones we miss and sends again the ones the peer missed.
@Suite struct VchanLostEventTests {
    // MARK: - The pure state machine

    @Test func anUnansweredSignalIsRepeatedFurtherApartEachTime() {
        var watch = VchanLostEvents()
        let start = ContinuousClock.Instant.now
        watch.signalled(afterRead: false, peerIndex: 100, at: start)
        var repeatedAt: [Int] = []
        for seconds in 0..<80 {
            let again = watch.tick(
                receiveProducer: 7, sendConsumer: 100, readerStuck: false, writerStuck: false,
                now: start + .seconds(seconds), interval: .seconds(1))
            if again { repeatedAt.append(seconds) }
        }
        // Not before a whole interval; then 2, 4, 8, 16 and 32 intervals after the last repeat (a repeat
        // can be lost too); then every 32 intervals while the peer does not move.
        #expect(repeatedAt == [1, 3, 7, 15, 31, 63])
        #expect(watch.resent == 6)
        // Once the peer moves, the signal is forgotten.
        let afterMoving = watch.tick(
            receiveProducer: 7, sendConsumer: 101, readerStuck: false, writerStuck: false,
            now: start + .seconds(200), interval: .seconds(1))
        #expect(!afterMoving)
        #expect(watch.afterWrite == nil)
        #expect(watch.resent == 6)
    }

    @Test func anAnsweredSignalIsForgotten() {
        var watch = VchanLostEvents()
        let start = ContinuousClock.Instant.now
        watch.signalled(afterRead: true, peerIndex: 40, at: start)
        // The peer wrote (its producer moved from 40): the event arrived.
        let again = watch.tick(
            receiveProducer: 48, sendConsumer: 0, readerStuck: false, writerStuck: false,
            now: start + .seconds(5), interval: .seconds(1))
        #expect(!again)
        #expect(watch.afterRead == nil)
        #expect(watch.resent == 0)
    }

    @Test func sleepersOverBytesOrRoomAreCountedAsRescued() {
        var watch = VchanLostEvents()
        let now = ContinuousClock.Instant.now
        for (reader, writer) in [(true, false), (false, false), (true, true)] {
            _ = watch.tick(
                receiveProducer: nil, sendConsumer: nil, readerStuck: reader, writerStuck: writer, now: now,
                interval: .seconds(1))
        }
        #expect(watch.rescued == 3)
        #expect(watch.resent == 0)
    }

    // MARK: - Both ends, events dropped

    /// Our server (re-check timer on) against an events-only client (what libxenvchan is), both losing every
    /// few of the events they send, over one-page rings: without our repeats the client sleeps for ever on
    /// a lost event, without our timer the server does. Both streams arrive whole.
    @Test func aTransferSurvivesLostEventsBothWays() async throws {
        let rig = VchanRig()
        let serverDomain = try await rig.makeDomain()
        let clientDomain = try await rig.makeDomain()
        var serverEnvironment = rig.environment(serverDomain)
        serverEnvironment.eventChannel = DroppingEventChannel(serverEnvironment.eventChannel, every: 7)
        var clientEnvironment = rig.environment(clientDomain)
        clientEnvironment.eventChannel = DroppingEventChannel(clientEnvironment.eventChannel, every: 5)
        let port = try VchanPort("lossy")
        async let listening = VchanServer.listen(
            domain: clientDomain.id, port: port, readSize: 1024, writeSize: 2048, environment: serverEnvironment,
            options: VchanOptions(recheckInterval: .milliseconds(20)))
        let client = try await VchanClient.connect(
            domain: serverDomain.id, port: port, environment: clientEnvironment,
            options: VchanOptions(recheckInterval: nil))
        let server = try await listening
        let up = patternBytes(count: 192 << 10, seed: 41)
        let down = patternBytes(count: 192 << 10, seed: 42)
        try await whileProgressing(stall: 60, "192 KiB each way with lost events") { progress in
            try await exchange(server: server, client: client, up: up, down: down, progress: progress)
        }
        let statistics = server.eventStatistics
        #expect(statistics.resent > 0, "the client missed events and got them again: \(server.debugDescription)")
        #expect(statistics.rescued > 0, "the server missed events and looked anyway")
        await client.close()
        await server.close()
    }
}

/// Forwards to a real backend but drops every `every`-th notify (counting from the first), as a platform
/// that loses events would.
final class DroppingEventChannel: EventChannelBackend {
    private let base: any EventChannelBackend
    private let every: Int
    private let count = Atomic<Int>(0)

    init(_ base: any EventChannelBackend, every: Int) {
        self.base = base
        self.every = every
    }

    func bindUnboundPort(remote: DomainID) throws(EventChannelError) -> EventChannelPort {
        try base.bindUnboundPort(remote: remote)
    }

    func bindInterdomain(
        remote: DomainID, remotePort: EventChannelPort
    ) throws(EventChannelError) -> EventChannelPort {
        try base.bindInterdomain(remote: remote, remotePort: remotePort)
    }

    func notify(_ port: EventChannelPort) throws(EventChannelError) {
        let sent = count.add(1, ordering: .relaxed).newValue
        if sent % every == 0 { return }
        try base.notify(port)
    }

    func unbind(_ port: EventChannelPort) throws(EventChannelError) { try base.unbind(port) }

    func notifications(_ port: EventChannelPort) -> EventNotifications { base.notifications(port) }
}
