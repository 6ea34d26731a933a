import Glibc
import SimulatedHypervisor
import Vchan
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport

/// Vchan: a server in dom0 streams to a client in a guest on the simulated hypervisor (the rendezvous over
/// the in-memory xenstored, events through the simulated event channels), against a plain memcpy of the
/// same bytes. Each byte is copied twice (into the ring, out of it); the reader and the writer run at the
/// same time on two threads, so up to 1.0x of one memcpy is possible in wall-clock time.
enum VchanBench {
    static func run() async throws {
        let host = SimulatedHost()
        let guest = try await host.makeGuest().domain
        let hypervisor = host.hypervisor
        func environment(_ domain: SimulatedDomain) -> VchanEnvironment { host.vchanEnvironment(for: domain) }
        let rounds = 5
        let chunk = 1 << 20
        let source = PageBuffer(pages: chunk / 4096)
        let target = PageBuffer(pages: chunk / 4096)
        source.withUnsafeMutableBytes { bytes in
            for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: index &* 31) }
        }
        for (label, ringSize, mebibytes) in [
            ("1-page rings (2 KiB in the page)", 2048, 64), ("64 KiB rings (16 pages)", 65536, 256),
            ("1 MiB rings (256 pages)", 1 << 20, 256),
        ] {
            let port = try VchanPort("bench\(ringSize)")
            async let listening = VchanServer.listen(
                domain: guest.id, port: port, readSize: min(ringSize, 1024), writeSize: ringSize,
                environment: environment(hypervisor.dom0))
            let client = try await VchanClient.connect(domain: .dom0, port: port, environment: environment(guest))
            let server = try await listening
            let total = mebibytes << 20
            var vchan = Timing.worst
            for _ in 0..<rounds {
                vchan = vchan.best(
                    try await Timing.measure {
                        async let sent: Void = {
                            for _ in 0..<(total / chunk) { try await server.write(source) }
                        }()
                        var received = 0
                        while received < total { received += try await client.read(into: target) }
                        try await sent
                    })
            }
            var copy = Timing.worst
            for _ in 0..<rounds {
                copy = copy.best(
                    Timing.measureSync {
                        for _ in 0..<(total / chunk) { memcpy(target.pointer, source.pointer, chunk) }
                    })
            }
            let megabytes = Double(total) / 1e6
            print(
                "   \(label), \(mebibytes) MiB dom0 -> guest: \(BlockBench.format(megabytes / vchan.wall)) MB/s vs "
                    + "memcpy \(BlockBench.format(megabytes / copy.wall)) MB/s "
                    + "(\(BlockBench.ratio(copy.wall, vchan.wall))x); per CPU-second "
                    + "\(BlockBench.format(megabytes / vchan.cpu)) vs \(BlockBench.format(megabytes / copy.cpu)) MB "
                    + "(\(BlockBench.ratio(copy.cpu, vchan.cpu))x)")
            await client.close()
            await server.close()
        }
        await host.dom0.close()
    }
}
