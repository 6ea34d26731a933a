import Testing

/// The stall watchdog the long vchan tests run under: it must fail a body that stops, and let one that keeps
/// moving run past its stall limit.
@Suite struct ProgressWatchdogTests {
    @Test func aBodyThatStopsMovingFails() async throws {
        await #expect(throws: Timeout.self) {
            try await whileProgressing(stall: 0.2, "stopped") { progress in
                progress.advance()
                try await Task.sleep(for: .seconds(30))
            }
        }
    }

    @Test func aBodyThatKeepsMovingRunsPastTheLimit() async throws {
        let clock = ContinuousClock()
        let start = clock.now
        let steps = try await whileProgressing(stall: 1, "moving") { progress in
            for _ in 0..<10 {
                try await Task.sleep(for: .milliseconds(150))
                progress.advance()
            }
            return progress.value
        }
        #expect(steps == 10)
        #expect(clock.now - start >= .milliseconds(1500))
    }
}
