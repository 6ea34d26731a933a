import NetBack
import NetFront
import NetworkDevice
import Testing
import XenCore

/// Writers racing a disconnect: the pages they fill are revoked only after they are done, and later writes
/// fail cleanly.
@Suite struct InFlightGateTests {
    @Test func closeWaitsForEveryOperationInside() async {
        let gate = InFlightGate()
        #expect(gate.enter() && gate.enter())
        let closing = Task { await gate.close() }
        try? await Task.sleep(for: .milliseconds(20))
        #expect(!gate.enter(), "closed to newcomers at once")
        gate.leave()
        gate.leave()
        await closing.value
    }

    @Test func writersRacingADisconnectFinishOrFailCleanly() async throws {
        let harness = try NetHarness()
        let (front, back, serving) = try await harness.connect()
        let draining = Task { for await _ in back.listen() {} }
        let writers = (0..<4).map { writer in
            Task { () -> Int in
                var sent = 0
                for index in 0..<10_000 {
                    do throws(NetworkError) {
                        try await front.write(
                            NetworkFrame(
                                data: testFrame(
                                    size: 100 + (index * 37) % 1400, seed: UInt32(index), from: front.mac, to: back.mac)
                            ))
                        sent += 1
                    } catch {
                        #expect(error == .disconnected)
                        break
                    }
                    if writer == 0, index == 200 { break }
                }
                return sent
            }
        }
        try await waitUntil { front.statistics.txPackets > 300 }
        await front.disconnect()
        var total = 0
        for writer in writers { total += await writer.value }
        #expect(total >= 300 && front.statistics.txPackets == UInt64(total))
        await back.disconnect()
        try await serving.value
        await draining.value
        try await waitUntil { harness.frontDomain.grantTable.refs.freeCount == 8192 - 8 }
    }
}
