import BlockFront
import NetBack
import NetFront
import NetifProtocol
import NetworkDevice
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport

#if canImport(Glibc)
    import Glibc
#endif

// MARK: - network section

extension DemoCommand {
    /// A vif between two simulated domains: NetBack in dom0 serves NetFront in a guest; a ping-like exchange,
    /// then a 16 MiB TCP-like stream each way in 64 KiB GSO frames with blank checksums, completed and checked
    /// on arrival, and a checksum of the whole stream on both sides.
    @Sendable static func netSection() async throws {
        let host = SimulatedHost(hypervisor: SimulatedHypervisor(grantTableSize: 8192))
        let guest = try host.createGuest(name: "demo-net-guest")
        let vif = SimulatedVif(host: host, guest: guest, mac: MACAddress(rawValue: 0x0016_3E00_0100))
        let nodes = vif.nodes
        let backStore = host.dom0Bus
        let (back, serving) = try await vif.startBackend()
        print("toolstack: vif \(guest.id).0 (mac \(nodes.mac)): \(nodes.frontendPath) <-> \(nodes.backendPath)")
        let front = try await vif.connectFront { $0.queues = 2 }
        let table = front.negotiated
        print(
            "frontend: connected, mac \(front.mac), mtu \(front.mtu), \(table.queues) queues, split event channels: "
                + "\(table.splitEventChannels), scatter-gather, GSO to the backend: \(table.txGSO.map { "\($0)" }.sorted()), "
                + "from it: \(table.rxGSO.map { "\($0)" }.sorted()), max frame \(front.maxFrameSize) B")

        // Ping-like: the backend answers each request frame with its bytes, addresses swapped.
        let echo = Task {
            for await frame in back.listen() {
                guard frame.data.count < 200 else { continue }
                try await back.write(size: frame.data.count) { reply in
                    reply.copy(from: frame.data)
                    MACAddress(from: frame.data, at: 6).write(to: reply, at: 0)
                    back.mac.write(to: reply, at: 6)
                    return frame.data.count
                }
            }
        }
        var replies = front.listen().makeAsyncIterator()
        var rtts: [Double] = []
        for sequence in 0..<5 {
            let start = ContinuousClock.now
            try await front.write(size: 98) { frame in
                back.mac.write(to: frame, at: 0)
                front.mac.write(to: frame, at: 6)
                frame.setUInt16(UInt16(0x88B5).byteSwapped, at: 12)
                frame.setUInt32(UInt32(sequence), at: 14)
                return 98
            }
            guard let reply = await replies.next(), reply.data.uint32(at: 14) == UInt32(sequence) else {
                throw DemoError.unexpected("echo \(sequence) lost")
            }
            let elapsed = ContinuousClock.now - start
            rtts.append(elapsed.inSeconds * 1e6)
            print("guest:    98 bytes from \(back.mac): seq=\(sequence) time=\(String(format2(rtts.last ?? 0))) µs")
        }
        echo.cancel()

        // 16 MiB each way at once, in TCP frames up to 64 KiB (GSO) with blank checksums.
        let total = 16 << 20
        let start = ContinuousClock.now
        async let up = stream(from: front, to: back, total: total)
        async let down = stream(from: back, to: front, total: total)
        let (sentUp, receivedUp, sentDown, receivedDown) = try await (up.0, up.1, down.0, down.1)
        let seconds = (ContinuousClock.now - start).inSeconds
        guard sentUp == receivedUp, sentDown == receivedDown else {
            throw DemoError.unexpected("stream checksums differ")
        }
        print(
            "stream:   16 MiB guest -> dom0 and 16 MiB dom0 -> guest at once in \(format2(seconds)) s; "
                + "FNV-1a of each stream identical on both ends (\(hex(sentUp)), \(hex(sentDown))); every TCP checksum "
                + "valid on arrival")
        print("frontend: \(front.statistics)")
        print("backend:  \(back.statistics)")
        await front.disconnect()
        await back.disconnect()
        try await serving.value
        print(
            "both ends closed: backend state \(try await backStore.state(of: nodes.backendPath).map(\.description) ?? "gone")"
        )
        try await nodes.destroy(in: backStore)
    }

    /// Sends `total` payload bytes from `source` in TCP frames (blank checksums, GSO above the MTU) while
    /// reading them at `destination`; returns the FNV-1a of what was sent and of what arrived.
    static func stream(from source: any NetworkDevice, to destination: any NetworkDevice, total: Int) async throws -> (
        UInt64, UInt64
    ) {
        async let received = receive(at: destination, total: total)
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        var sent = 0
        var index = 0
        while sent < total {
            let payload = min(total - sent, index % 4 == 3 ? 1000 : 65481)
            try await source.write(size: payload + 54, checksum: .blank, gso: nil) { frame in
                writeTCPFrame(frame, payload: payload, index: index, from: source.mac, to: destination.mac)
                hash = fnv(frame.slice(from: 54, count: payload), hash)
                return payload + 54
            }
            sent += payload
            index += 1
        }
        return (hash, try await received)
    }

    private static func receive(at device: any NetworkDevice, total: Int) async throws -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        var received = 0
        for await frame in device.listen() {
            if frame.checksum == .blank { FrameChecksum.complete(frame.data) }
            guard FrameChecksum.verify(frame.data) == true else { throw DemoError.unexpected("bad TCP checksum") }
            hash = fnv(frame.data.slice(from: 54, count: frame.data.count - 54), hash)
            received += frame.data.count - 54
            if received >= total { break }
        }
        return hash
    }

    /// An IPv4/TCP frame (10.0.0.1 → 10.0.0.2) whose payload depends on `index`, checksum field blank.
    private static func writeTCPFrame(
        _ frame: PageBuffer, payload: Int, index: Int, from source: MACAddress, to destination: MACAddress
    ) {
        destination.write(to: frame, at: 0)
        source.write(to: frame, at: 6)
        frame.setUInt16(UInt16(0x0800).byteSwapped, at: 12)
        let length = 40 + payload
        let ip: [UInt8] = [0x45, 0, UInt8(length >> 8), UInt8(length & 0xFF), 0, 0, 0x40, 0, 64, 6, 0, 0]
        for (offset, byte) in ip.enumerated() { frame.setUInt8(byte, at: 14 + offset) }
        frame.setUInt32(UInt32(0x0A00_0001).byteSwapped, at: 26)
        frame.setUInt32(UInt32(0x0A00_0002).byteSwapped, at: 30)
        frame.setUInt16(UInt16(40000).byteSwapped, at: 34)
        frame.setUInt16(UInt16(5001).byteSwapped, at: 36)
        frame.setUInt32(UInt32(truncatingIfNeeded: index).byteSwapped, at: 38)
        frame.setUInt32(0, at: 42)
        frame.setUInt16(UInt16(0x5018).byteSwapped, at: 46)
        frame.setUInt16(0xFFFF, at: 48)
        frame.setUInt32(0, at: 50)
        // The payload: 64-bit words of a linear congruential sequence seeded by the index.
        var value = UInt64(truncatingIfNeeded: index) &* 0x9E37_79B9_7F4A_7C15
        let base = frame.pointer + 54
        var offset = 0
        while offset + 8 <= payload {
            value = value &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            base.storeBytes(of: value, toByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        while offset < payload {
            base.storeBytes(of: UInt8(truncatingIfNeeded: value >> 56), toByteOffset: offset, as: UInt8.self)
            offset += 1
        }
        FrameChecksum.setPseudoHeader(frame)
    }

    private static func hex(_ value: UInt64) -> String { String(value, radix: 16) }

    /// FNV-1a over 64-bit words (then the tail bytes) of `buffer`, continuing from `hash`.
    private static func fnv(_ buffer: PageBuffer, _ hash: UInt64) -> UInt64 {
        var hash = hash
        let words = buffer.count / 8
        let base = buffer.pointer
        for index in 0..<words {
            hash = (hash ^ base.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self)) &* 0x100_0000_01B3
        }
        for index in (words * 8)..<buffer.count {
            hash = (hash ^ UInt64(base.load(fromByteOffset: index, as: UInt8.self))) &* 0x100_0000_01B3
        }
        return hash
    }
}

/// Two decimals.
func format2(_ value: Double) -> String {
    let scaled = Int((value * 100).rounded())
    let fraction = abs(scaled % 100)
    return "\(scaled / 100).\(fraction < 10 ? "0" : "")\(fraction)"
}
