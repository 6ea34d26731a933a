import SimulatedHypervisor
import Synchronization
import Testing
import XenCore

@testable import Vchan

/// The notification rules at the connection level, with the re-check timer off: every wake-up must come
/// from an event the peer was asked for, so a missed one hangs (and the time limit, or the stall watchdog,
/// fails the test).
@Suite struct VchanNotifyTests {
    static let eventsOnly = VchanOptions(recheckInterval: nil)

    /// The race libxenvchan's `fast_get_data_ready` closes, forced: the peer's write lands after our reader
    /// found the ring empty but before it asked for an event, so the peer sends none. The reader must look
    /// again after asking; otherwise it sleeps forever on bytes that are already there.
    @Test func readerLooksAgainAfterAsking() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain(), options: Self.eventsOnly)
        // One round trip consumes the requests set up at connection time.
        try await clientEnd.write([0])
        _ = try await serverEnd.read()
        let signalled = Mutex<[Bool]>([])
        serverEnd.inbound.withLock { half in
            half.ring?.raceWindow = once {
                clientEnd.outbound.withLock { client in
                    let outcome = ([1, 2, 3] as [UInt8]).withUnsafeBytes { try? client.ring?.write($0) }
                    signalled.withLock { $0.append(outcome?.notify ?? true) }
                }
            }
        }
        let got = try await within(60, "a read whose data landed in the window") {
            try await serverEnd.read(exactly: 3)
        }
        #expect(got == [1, 2, 3])
        #expect(signalled.withLock { $0 } == [false], "the peer wrote once, without an event")
        await clientEnd.close()
        await serverEnd.close()
    }

    /// The same race on the writer's side: room made after our writer found the ring full but before it
    /// asked to hear about reads.
    @Test func writerLooksAgainAfterAsking() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain(), options: Self.eventsOnly)
        try await serverEnd.write(patternBytes(count: 2048, seed: 20))  // the right ring is full
        let signalled = Mutex<[Bool]>([])
        serverEnd.outbound.withLock { half in
            half.ring?.raceWindow = once {
                clientEnd.inbound.withLock { client in
                    var sink = [UInt8](repeating: 0, count: 2048)
                    let outcome = sink.withUnsafeMutableBytes { try? client.ring?.read(into: $0) }
                    signalled.withLock { $0.append(outcome?.notify ?? true) }
                }
            }
        }
        try await within(60, "a write whose room appeared in the window") {
            try await serverEnd.write(patternBytes(count: 2048, seed: 21))
        }
        #expect(signalled.withLock { $0 } == [false], "the peer read once, without an event")
        #expect(try await clientEnd.read(exactly: 2048) == patternBytes(count: 2048, seed: 21))
        await clientEnd.close()
        await serverEnd.close()
    }

    /// Wraps `body` so that it runs the first time only.
    private func once(_ body: @escaping @Sendable () -> Void) -> @Sendable () -> Void {
        let fired = Mutex(false)
        return {
            if fired.withLock({ done in
                defer { done = true }; return !done
            }) {
                body()
            }
        }
    }

    /// Thousands of tiny round trips: each side sleeps on an empty ring after nearly every message, the
    /// window in which libxenvchan's history lost a wake-up (data landing between "empty" and "asked").
    @Test func noMissedNotificationInPingPong() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain(), options: Self.eventsOnly)
        let rounds = 5000
        try await whileProgressing(stall: 60, "ping-pong") { progress in
            async let echo: Void = {
                for _ in 0..<rounds {
                    let message = try await serverEnd.read(exactly: 3)
                    try await serverEnd.write(message.reversed())
                }
            }()
            for round in 0..<rounds {
                let message: [UInt8] = [UInt8(truncatingIfNeeded: round), 1, 2]
                try await clientEnd.write(message)
                #expect(try await clientEnd.read(exactly: 3) == message.reversed())
                progress.advance()
            }
            try await echo
        }
        await clientEnd.close()
        await serverEnd.close()
    }

    /// Streaming both ways at once through the smallest rings, events only: both sides fill and drain the
    /// rings constantly, with both request bits in play.
    @Test func noMissedNotificationStreamingBothWays() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain(), options: Self.eventsOnly)
        try await whileProgressing(stall: 60, "streaming") { progress in
            try await exchange(
                server: serverEnd, client: clientEnd, up: patternBytes(count: 2_000_000, seed: 11),
                down: patternBytes(count: 2_000_000, seed: 12), progress: progress)
        }
        await clientEnd.close()
        await serverEnd.close()
    }

    /// ocaml-vchan acknowledged what it read only on the *next* read: a writer blocked on a full ring then
    /// waited for a read that never came. Here one read frees the ring and wakes the writer at once.
    @Test func consumptionIsAcknowledgedAtOnce() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain(), options: Self.eventsOnly)
        let data = patternBytes(count: 2048 + 1000, seed: 13)
        let writer = Task { try await serverEnd.write(data) }
        let first = try await clientEnd.read(exactly: 2048)
        #expect(first == Array(data.prefix(2048)))
        // No further read: the remaining 1000 bytes fit now, so the write must complete by itself.
        try await within(60, "the writer woken by the read") { try await writer.value }
        #expect(clientEnd.dataReady == 1000)
        await clientEnd.close()
        await serverEnd.close()
    }

    /// The peer is told when we close: a reader sleeping on an empty ring wakes with `.peerClosed`.
    @Test func closeWakesThePeer() async throws {
        let rig = VchanRig()
        let (serverEnd, clientEnd) = try await rig.connect(
            server: try await rig.makeDomain(), client: try await rig.makeDomain(), options: Self.eventsOnly)
        let reader = Task { try await serverEnd.read() }
        try await Task.sleep(for: .milliseconds(50))
        await clientEnd.close()
        await #expect(throws: VchanError.peerClosed) {
            try await within(60, "the reader woken by close") { try await reader.value }
        }
        await serverEnd.close()
    }
}
