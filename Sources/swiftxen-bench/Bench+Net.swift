import BlockFront
import Glibc
import NetBack
import NetFront
import NetifProtocol
import NetworkDevice
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport

/// Net: NetFront ↔ NetBack on the simulated hypervisor, frames/s and MB/s each way for 64-byte, 1500-byte and
/// 64 KiB GSO frames, against a plain memcpy of the same bytes (one copy per frame: the least any transport
/// does). Our path copies each frame three times: the writer's fill into a (shared) page, the peer's copy out
/// of the granted pages (grant copy on the backend, memcpy on the frontend), into a frame of its own.
enum NetBench {
    static func run() async throws {
        let host = SimulatedHost(hypervisor: SimulatedHypervisor(grantTableSize: 8192))
        let vif = SimulatedVif(
            host: host, guest: try host.createGuest(name: "bench"), mac: MACAddress(rawValue: 0x0016_3E00_0001))
        let (back, serving) = try await vif.startBackend()
        // Blank checksums are trusted as they come (Linux's CHECKSUM_PARTIAL): the bench measures transport.
        let front = try await vif.connectFront { $0.completeBlankChecksums = false }
        while back.negotiated == nil { try await Task.sleep(for: .milliseconds(1)) }
        print("   negotiated: \(front.negotiated.queues) queue, scatter-gather, GSO, split event channels, rx-copy")

        let rounds = 3
        for (label, size, count) in [("64 B", 64, 100_000), ("1500 B", 1514, 60_000), ("64 KiB GSO", 65535, 3_000)] {
            let frame = frameOf(size: size, from: front.mac, to: back.mac)
            let gso = size > 1514 ? NetworkGSO(type: .tcpv4, segmentSize: 1460) : nil
            let checksum: NetworkChecksum = size > 1514 ? .blank : .unverified
            var results: [String] = []
            for (direction, source, sink) in [
                ("front->back", front as any NetworkDevice, back as any NetworkDevice), ("back->front", back, front),
            ] {
                _ = try await stream(frame, count: count / 10, checksum: checksum, gso: gso, from: source, to: sink)
                var best = Timing.worst
                for _ in 0..<rounds {
                    best = best.best(
                        try await stream(frame, count: count, checksum: checksum, gso: gso, from: source, to: sink))
                }
                results.append(
                    "\(direction) \(rate(Double(count) / best.wall)) frames/s, "
                        + "\(rate(Double(count * size) / best.wall / 1e6)) MB/s "
                        + "(per CPU-second \(rate(Double(count * size) / best.cpu / 1e6)) MB)")
            }
            let target = PageBuffer(pages: (size + 4095) / 4096)
            var baseline = Timing.worst
            for _ in 0..<rounds {
                baseline = baseline.best(
                    Timing.measureSync { for _ in 0..<count { memcpy(target.pointer, frame.pointer, size) } })
            }
            let memcpyRate = Double(count) / baseline.wall
            print(
                "   \(label) frames: \(results.joined(separator: "; ")); memcpy of the same bytes \(rate(memcpyRate)) "
                    + "frames/s, \(rate(memcpyRate * Double(size) / 1e6)) MB/s (per CPU-second "
                    + "\(rate(Double(count * size) / baseline.cpu / 1e6)) MB)")
        }
        print("   frontend: \(front.statistics)")
        await front.disconnect()
        await back.disconnect()
        try await serving.value
        try await vif.nodes.destroy(in: host.dom0Bus)
    }

    /// Sends `count` copies of `frame` from `source` while `sink` reads them; the time of the whole transfer.
    private static func stream(
        _ frame: PageBuffer, count: Int, checksum: NetworkChecksum, gso: NetworkGSO?, from source: any NetworkDevice,
        to sink: any NetworkDevice
    ) async throws -> Timing {
        try await Timing.measure {
            async let received: Int = {
                var seen = 0
                for await _ in sink.listen(headerSize: 0) {
                    seen += 1
                    if seen == count { break }
                }
                return seen
            }()
            for _ in 0..<count {
                try await source.write(size: frame.count, checksum: checksum, gso: gso) { buffer in
                    memcpy(buffer.pointer, frame.pointer, frame.count)
                    return frame.count
                }
            }
            guard await received == count else { throw BenchError.lost }
        }
    }

    enum BenchError: Error { case lost }

    /// A TCP/IPv4 frame of `size` bytes (pseudo-header sum in its checksum field).
    private static func frameOf(size: Int, from source: MACAddress, to destination: MACAddress) -> PageBuffer {
        let frame = PageBuffer(byteCount: size)
        destination.write(to: frame, at: 0)
        source.write(to: frame, at: 6)
        frame.setUInt16(UInt16(0x0800).byteSwapped, at: 12)
        let header: [UInt8] = [0x45, 0, UInt8((size - 14) >> 8), UInt8((size - 14) & 0xFF), 0, 0, 0x40, 0, 64, 6]
        for (offset, byte) in header.enumerated() { frame.setUInt8(byte, at: 14 + offset) }
        frame.setUInt32(UInt32(0x0A00_0001).byteSwapped, at: 26)
        frame.setUInt32(UInt32(0x0A00_0002).byteSwapped, at: 30)
        if size >= 54 { frame.setUInt8(0x50, at: 46) }
        for offset in 54..<max(54, size) { frame.setUInt8(UInt8(truncatingIfNeeded: offset), at: offset) }
        if size >= 54 { FrameChecksum.setPseudoHeader(frame) }
        return frame
    }

    private static func rate(_ value: Double) -> String {
        value >= 1000 ? String(Int(value.rounded())) : String(Double(Int(value * 10)) / 10)
    }
}
