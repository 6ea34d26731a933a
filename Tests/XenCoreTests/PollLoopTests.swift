import Synchronization
import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The one poll loop: rounds as the client asks (again without polling, wait, stop), never sleeping while
/// jobs wait, spinning only while the client says so, and the wake signal drained and kept from the client.
@Suite struct PollLoopTests {
    typealias Pipe = IOReactorTests.Pipe

    /// A client that plays `steps` in order and records what the loop did.
    final class Scripted: PollLoopClient {
        let pipe: Pipe
        var steps: [PollLoopStep]
        var prepared: [Bool] = []
        var readyCalls: [(wake: Int16, pipe: Int16)] = []
        var spins = 0
        var spinLimit = 0
        var onSpin: (Int) -> Void = { _ in }

        init(_ pipe: Pipe, _ steps: [PollLoopStep]) {
            self.pipe = pipe
            self.steps = steps
        }

        func prepare(_ fds: inout [pollfd], jobsWaiting: Bool) -> PollLoopStep {
            prepared.append(jobsWaiting)
            let entry = pollfd(fd: pipe.reader, events: Int16(POLLIN), revents: 0)
            if fds.count == 1 { fds.append(entry) } else { fds[1] = entry }
            return steps.isEmpty ? .stop : steps.removeFirst()
        }

        func keepSpinning(yielded: UInt64?) -> Bool {
            spins += 1
            onSpin(spins)
            return spins <= spinLimit
        }

        func ready(_ fds: [pollfd]) -> Bool {
            readyCalls.append((fds[0].revents, fds[1].revents))
            if fds[1].revents & Int16(POLLIN) != 0 { _ = pipe.drain() }
            return true
        }
    }

    /// Runs the loop over a fresh pipe with a client playing `steps`, after `setUp`; returns the client and the
    /// loop's wake signal.
    static func play(
        _ steps: [PollLoopStep], setUp: (Scripted, WakeSignal) -> Void = { _, _ in },
        runJobs: () -> Bool = { false }
    ) throws -> (Scripted, WakeSignal) {
        let pipe = Pipe()
        defer { pipe.closeBoth() }
        let wake = try WakeSignal()
        let client = Scripted(pipe, steps)
        setUp(client, wake)
        PollLoop.run(client, wake: wake, runJobs: runJobs)
        return (client, wake)
    }

    @Test func againGoesRoundWithoutPollingAndStopEnds() throws {
        let (client, _) = try Self.play([.again, .again, .wait(), .stop]) { client, _ in client.pipe.send() }
        #expect(client.prepared.count == 4)
        // Only the one wait polled: the pipe's byte was seen once, by it.
        #expect(client.readyCalls.count == 1)
        #expect(client.readyCalls.first?.pipe == Int16(POLLIN))
    }

    @Test func queuedJobsKeepTheLoopFromSleeping() throws {
        // Nothing will ever be ready, and the client asks to wait without bound: only the jobs still waiting
        // may keep the loop from sleeping. (Should it sleep anyway, a signal 5 s later ends the test, failing.)
        var jobRounds = 0
        let (client, _) = try Self.play(
            [.wait(), .wait(), .stop],
            setUp: { _, wake in
                _ = DetachedThread.spawn {
                    usleep(5_000_000)
                    wake.signal()
                }
            },
            runJobs: {
                jobRounds += 1
                return jobRounds < 3
            })
        #expect(client.prepared == [true, true, false])
        #expect(client.readyCalls.isEmpty)
    }

    @Test func spinningPollsWithoutSleepingWhileTheClientSaysSo() throws {
        let (client, _) = try Self.play([.wait(spin: true), .stop]) { client, _ in
            client.spinLimit = 5
            // Data arrives during the third spin: the next poll without sleeping finds it.
            client.onSpin = { [pipe = client.pipe] count in if count == 3 { pipe.send() } }
        }
        #expect(client.spins == 3)
        #expect(client.readyCalls.count == 1)
        #expect(client.readyCalls.first?.pipe == Int16(POLLIN))
    }

    @Test func theWakeSignalIsDrainedAndShownAsEntryZero() throws {
        let (client, wake) = try Self.play([.wait(), .stop]) { _, wake in
            wake.signal()
            wake.signal()
        }
        #expect(client.readyCalls.count == 1)
        #expect(client.readyCalls.first?.wake == Int16(POLLIN))
        #expect(client.readyCalls.first?.pipe == 0)
        var entry = wake.pollEntry
        #expect(poll(&entry, 1, 0) == 0)
    }

    @Test func aTimedWaitReturnsWithNothingReady() throws {
        let (client, _) = try Self.play([.wait(milliseconds: 1), .stop])
        #expect(client.prepared.count == 2)
        #expect(client.readyCalls.isEmpty)
    }
}
