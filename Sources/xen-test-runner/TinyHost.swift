import NetifProtocol
import NetworkDevice
import Synchronization
import XenCore

/// A minimal IPv4 host on one network device, for the net checks: it answers ARP for its address, resolves
/// its peer's MAC, pings it (ICMP echo built and checked here), sends UDP datagrams and counts the ones it
/// receives (each TCP/UDP checksum verified, the payloads hashed). Everything it sends carries real IPv4,
/// ICMP and UDP checksums (or a blank one, when the frame says so), so the kernel on the other side accepts
/// the frames as it would a guest's.
final class TinyHost: Sendable {
    struct Received: Sendable {
        var datagrams = 0
        var bytes = 0
        var hash: UInt64 = 0
        var badChecksums = 0
        var other = 0
    }

    private struct State {
        var peerMAC: MACAddress?
        var echoes: [UInt16: Int] = [:]
        var received = Received()
    }

    let device: any NetworkDevice
    let address: UInt32
    let peer: UInt32
    private let state = Mutex(State())

    init(device: any NetworkDevice, address: UInt32, peer: UInt32) {
        self.device = device
        self.address = address
        self.peer = peer
    }

    var received: Received { state.withLock { $0.received } }
    var peerMAC: MACAddress? { state.withLock { $0.peerMAC } }

    /// Reads the device until its sequence ends, answering and counting.
    func run() async {
        for await frame in device.listen() { await handle(frame) }
    }

    private func handle(_ frame: NetworkFrame) async {
        let data = frame.data
        guard data.count >= 42 else { return }
        switch data.uint16(at: 12).byteSwapped {
        case 0x0806:
            let operation = data.uint16(at: 20).byteSwapped
            let senderIP = data.uint32(at: 28).byteSwapped
            let targetIP = data.uint32(at: 38).byteSwapped
            if operation == 2, senderIP == peer {
                state.withLock { $0.peerMAC = MACAddress(from: data, at: 22) }
            } else if operation == 1, targetIP == address {
                let requester = MACAddress(from: data, at: 22)
                try? await device.write(NetworkFrame(data: arp(operation: 2, to: requester, targetIP: senderIP)))
            }
        case 0x0800 where data.uint32(at: 30).byteSwapped == address:
            let proto = data.uint8(at: 23)
            let offset = 14 + Int(data.uint8(at: 14) & 0x0F) * 4
            if proto == 1, data.count >= offset + 8, data.uint8(at: offset) == 0 {
                let good = InternetChecksum.sum(data, from: offset, count: data.count - offset) == 0xFFFF
                let sequence = data.uint16(at: offset + 6).byteSwapped
                state.withLock { $0.echoes[sequence] = good ? data.count : -1 }
            } else if proto == 17, data.count >= offset + 8 {
                let good = FrameChecksum.verify(data) ?? true
                let payload = data.slice(from: offset + 8, count: data.count - offset - 8)
                state.withLock { state in
                    state.received.datagrams += 1
                    state.received.bytes += payload.count
                    state.received.hash = streamHash(state.received.hash, payload)
                    if !good { state.received.badChecksums += 1 }
                }
            } else {
                state.withLock { $0.received.other += 1 }
            }
        default:
            state.withLock { $0.received.other += 1 }
        }
    }

    // MARK: - Sending

    private func ethernet(_ frame: PageBuffer, to destination: MACAddress, type: UInt16) {
        destination.write(to: frame, at: 0)
        device.mac.write(to: frame, at: 6)
        frame.setUInt16(type.byteSwapped, at: 12)
    }

    private func arp(operation: UInt16, to destination: MACAddress, targetIP: UInt32) -> PageBuffer {
        let frame = PageBuffer(pages: 1).slice(from: 0, count: 60)
        ethernet(frame, to: destination, type: 0x0806)
        for (offset, value) in [(14, UInt16(1)), (16, 0x0800), (18, 0x0604), (20, operation)] {
            frame.setUInt16(value.byteSwapped, at: offset)
        }
        device.mac.write(to: frame, at: 22)
        frame.setUInt32(address.byteSwapped, at: 28)
        (operation == 1 ? MACAddress(rawValue: 0) : destination).write(to: frame, at: 32)
        frame.setUInt32(targetIP.byteSwapped, at: 38)
        return frame
    }

    /// An IPv4 packet of `payload` bytes to the peer (header checksum filled in); returns the frame and the
    /// offset of the payload.
    private func ipv4(proto: UInt8, payload: Int, to destination: MACAddress, id: UInt16) -> (PageBuffer, Int) {
        let size = 14 + 20 + payload
        let frame = PageBuffer(byteCount: size)
        ethernet(frame, to: destination, type: 0x0800)
        frame.setUInt8(0x45, at: 14)
        frame.setUInt16(UInt16(20 + payload).byteSwapped, at: 16)
        frame.setUInt16(id.byteSwapped, at: 18)
        frame.setUInt16(UInt16(0x4000).byteSwapped, at: 20)
        frame.setUInt8(64, at: 22)
        frame.setUInt8(proto, at: 23)
        frame.setUInt32(address.byteSwapped, at: 26)
        frame.setUInt32(peer.byteSwapped, at: 30)
        frame.setUInt16((~InternetChecksum.sum(frame, from: 14, count: 20)).byteSwapped, at: 24)
        return (frame, 34)
    }

    /// Learns the peer's MAC with ARP (a request every 200 ms until the reply).
    func resolvePeer(attempts: Int = 50) async throws -> MACAddress {
        for _ in 0..<attempts {
            if let known = peerMAC { return known }
            try await device.write(NetworkFrame(data: arp(operation: 1, to: .broadcast, targetIP: peer)))
            for _ in 0..<20 {
                if let known = peerMAC { return known }
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        throw CheckFailure("no ARP reply from \(dotted(peer))")
    }

    /// One ICMP echo to the peer; the reply's size (its ICMP checksum verified), or a failure after `seconds`.
    func ping(sequence: UInt16, payload: Int = 56, seconds: Int = 5) async throws -> Int {
        let destination = try await resolvePeer()
        let (frame, offset) = ipv4(proto: 1, payload: 8 + payload, to: destination, id: sequence)
        frame.setUInt8(8, at: offset)
        frame.setUInt16(UInt16(0x5358).byteSwapped, at: offset + 4)
        frame.setUInt16(sequence.byteSwapped, at: offset + 6)
        for index in 0..<payload {
            frame.setUInt8(UInt8(truncatingIfNeeded: index &+ Int(sequence)), at: offset + 8 + index)
        }
        frame.setUInt16((~InternetChecksum.sum(frame, from: offset, count: 8 + payload)).byteSwapped, at: offset + 2)
        try await device.write(NetworkFrame(data: frame, checksum: .validated))
        for _ in 0..<(seconds * 100) {
            if let size = state.withLock({ $0.echoes.removeValue(forKey: sequence) }) {
                try require(size > 0, "echo reply \(sequence) has a bad ICMP checksum")
                return size
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw CheckFailure("no echo reply \(sequence) from \(dotted(peer))")
    }

    /// One UDP datagram to the peer's `port`: its checksum left blank for the device to offload or fill in,
    /// or computed here (`.validated`).
    func sendUDP(_ payload: PageBuffer, from source: UInt16, to port: UInt16, checksum: NetworkChecksum) async throws {
        let destination = try await resolvePeer()
        let (frame, offset) = ipv4(proto: 17, payload: 8 + payload.count, to: destination, id: source)
        frame.setUInt16(source.byteSwapped, at: offset)
        frame.setUInt16(port.byteSwapped, at: offset + 2)
        frame.setUInt16(UInt16(8 + payload.count).byteSwapped, at: offset + 4)
        frame.slice(from: offset + 8, count: payload.count).copy(from: payload)
        if checksum == .blank { FrameChecksum.setPseudoHeader(frame) } else { FrameChecksum.complete(frame) }
        try await device.write(NetworkFrame(data: frame, checksum: checksum))
    }
}

/// The hash of a stream of datagrams after `payload` (order matters): each datagram's FNV-1a folded in.
func streamHash(_ hash: UInt64, _ payload: PageBuffer) -> UInt64 {
    hash &* 0x100_0000_01B3 &+ BlockFrontChecks.checksum(payload)
}

/// "a.b.c.d".
func dotted(_ address: UInt32) -> String {
    (0..<4).map { String((address >> (24 - 8 * $0)) & 0xFF) }.joined(separator: ".")
}
