import Glibc
import Testing

@testable import XenCore

/// The I/O threads' one wake-up mechanism: readable after a signal, quiet after a drain, and a signaller never
/// blocks, however many signals pile up before the thread drains.
@Suite struct WakeSignalTests {
    private func readable(_ wake: WakeSignal) -> Bool {
        var entry = [wake.pollEntry]
        return poll(&entry, 1, 0) == 1 && entry[0].revents & Int16(POLLIN) != 0
    }

    @Test func signalDrainAndAFullPipe() throws {
        let wake = try WakeSignal()
        #expect(!readable(wake))
        wake.signal()
        #expect(readable(wake))
        wake.drain()
        #expect(!readable(wake))
        // More signals than a pipe holds (64 KiB on Linux): the extra ones are dropped, nobody blocks.
        for _ in 0..<100_000 { wake.signal() }
        #expect(readable(wake))
        wake.drain()
        #expect(!readable(wake))
        #expect(fcntl(wake.descriptor, F_GETFD) & FD_CLOEXEC != 0)
    }
}
