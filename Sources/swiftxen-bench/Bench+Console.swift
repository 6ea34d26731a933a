import ConsoleBackend
import XenCore
import XenTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// Console throughput: one extra console connected through the xenbus handshake on the simulated
/// hypervisor; the guest prints N MiB and dom0's backend reads them (and the other way, through the smaller
/// `in` ring). The peer, mirage's Conback, moves one ring-full per event the same way; there is no runnable
/// OCaml peer here, so the numbers stand alone.
func benchConsole() async throws {
    let host = SimulatedHost()
    let guest = try await host.makeGuest()
    let (frontend, session) = try await host.connectExtraConsole(guest)

    let chunk = [UInt8](repeating: 0x41, count: 4096)
    for (label, mebibytes, writer, reader) in [
        ("guest -> backend (out, 2 KiB ring)", 64, frontend.connection, session.connection),
        ("backend -> guest (in, 1 KiB ring)", 16, session.connection, frontend.connection),
    ] {
        let total = mebibytes << 20
        let clock = ContinuousClock()
        let start = clock.now
        async let produced: Void = {
            var sent = 0
            while sent < total {
                try await writer.write(chunk)
                sent += chunk.count
            }
        }()
        var received = 0
        while received < total { received += try await reader.read(maximum: 4096).count }
        try await produced
        let elapsed = clock.now - start
        let seconds = elapsed.inSeconds
        let rate = Double(total) / seconds / 1_000_000
        print("   console \(label): \(mebibytes) MiB in \(fixed(seconds, 2)) s = \(fixed(rate, 1)) MB/s")
    }
    await frontend.close()
    await session.close()
    await host.dom0.close()
    await guest.xenstore.close()
}

/// `value` with `digits` decimals (no Foundation in the bench).
private func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    let whole = scaled / Int(scale)
    let fraction = String(scaled % Int(scale))
    return "\(whole).\(String(repeating: "0", count: digits - fraction.count))\(fraction)"
}
