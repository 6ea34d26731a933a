import BlockBack
import BlockDevice
import BlockFront
import Foundation
import XenCore
import XenTestSupport
import Xenbus

// MARK: - block section

extension DemoCommand {
    /// Attaches a vbd backed by a temporary image on the simulated hypervisor: BlockBack in dom0 serves the
    /// file, BlockFront in a guest writes, reads back, verifies, discards and flushes, then both sides close.
    @Sendable static func blockSection() async throws {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent(
            "swiftxen-demo-\(ProcessInfo.processInfo.processIdentifier).img"
        ).path
        guard FileManager.default.createFile(atPath: image, contents: nil) else {
            throw DemoError.unexpected("cannot create \(image)")
        }
        defer { try? FileManager.default.removeItem(atPath: image) }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try handle.truncate(atOffset: 32 << 20)
        try handle.close()

        let host = SimulatedHost()
        let vbd = SimulatedVbd(host: host, guest: try host.createGuest(name: "demo-guest"))
        let nodes = vbd.nodes
        let backStore = host.dom0Bus
        let disk = try FileBlockDevice(path: image)
        let serving = try await vbd.serve(disk)
        print(
            "toolstack: vbd 51712 (xvda) for domain \(vbd.guest.id): \(nodes.frontendPath) <-> "
                + nodes.backendPath)
        print("backend:  serving \(image) (\(await disk.info()))")
        let front = try await vbd.connectFront()
        let negotiated = front.negotiated
        print("frontend: connected to \(front.backendPath): \(await front.info())")
        print(
            "          \(negotiated.ringPages)-page ring, \(negotiated.queues) queue(s), "
                + "\(negotiated.segmentsPerRequest) segments/request, persistent grants: \(negotiated.persistentGrants), "
                + "flush: \(negotiated.backend.flush), barrier: \(negotiated.backend.barrier), "
                + "discard: \(negotiated.backend.discard)")

        // Write 8 MiB of a pattern in 1 MiB requests, read it back, verify.
        let total = 8 << 20
        let chunk = 1 << 20
        let data = PageBuffer(pages: total / 4096)
        for index in 0..<total { data.setUInt8(UInt8(truncatingIfNeeded: index &* 31 &+ index >> 12), at: index) }
        let clock = ContinuousClock()
        let writeTime = try await clock.measure {
            for offset in stride(from: 0, to: total, by: chunk) {
                try await front.write(at: UInt64(offset / 512), from: [data.slice(from: offset, count: chunk)])
            }
        }
        let flushTime = try await clock.measure { try await front.flush() }
        let back = PageBuffer(pages: total / 4096)
        let readTime = try await clock.measure {
            for offset in stride(from: 0, to: total, by: chunk) {
                try await front.read(at: UInt64(offset / 512), into: [back.slice(from: offset, count: chunk)])
            }
        }
        guard back.contentsEqual(data) else { throw DemoError.unexpected("read back differs from what was written") }
        print(
            "frontend: wrote 8 MiB in \(ms(writeTime)), flushed (fsync) in \(ms(flushTime)), "
                + "read it back in \(ms(readTime)): verified")
        print("          throughput: write \(mbps(total, writeTime)) MB/s, read \(mbps(total, readTime)) MB/s")

        // A 3-sector write from an unaligned buffer (mirage-block-xen only takes whole pages).
        let odd = PageBuffer(copying: [UInt8](repeating: 0xA5, count: 1536))
        try await front.write(at: 5, from: [odd])
        try await front.discard(at: 6, count: 1)
        let check = PageBuffer(pages: 1).slice(from: 0, count: 1536)
        try await front.read(at: 5, into: [check])
        let expected =
            [UInt8](repeating: 0xA5, count: 512) + [UInt8](repeating: 0, count: 512)
            + [UInt8](repeating: 0xA5, count: 512)
        guard check.bytes == expected else { throw DemoError.unexpected("discard did not zero sector 6") }
        print("frontend: 1536-byte write, discard of sector 6, read back: verified")

        await front.disconnect()
        try await serving.value
        print(
            "close:    frontend \(try await backStore.state(of: nodes.frontendPath).map(\.description) ?? "gone"), "
                + "backend \(try await backStore.state(of: nodes.backendPath).map(\.description) ?? "gone")")
        try await nodes.destroy(in: backStore)
    }

    private static func ms(_ duration: Duration) -> String {
        let value = duration.inSeconds * 1000
        return "\(Int(value.rounded())) ms"
    }

    private static func mbps(_ bytes: Int, _ duration: Duration) -> Int {
        Int((Double(bytes) / 1e6 / duration.inSeconds).rounded())
    }
}
