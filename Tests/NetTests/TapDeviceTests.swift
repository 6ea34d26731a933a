import CXen
import NetBack
import NetifProtocol
import NetworkDevice
import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The TAP side of a NetBack bridge on this host's kernel: a TAP interface (no address: IPv6 off before it
/// goes up, no IPv4 ever), with a raw packet socket on it playing the kernel's side.
@Suite struct TapDeviceTests {
    @Test func virtioHeaderMatchesTheKernelHeader() {
        #expect(MemoryLayout<virtio_net_hdr>.size == VirtioNetHeader.size)
        #expect(VirtioNetHeader.needsChecksum == VIRTIO_NET_HDR_F_NEEDS_CSUM)
        #expect(VirtioNetHeader.dataValid == VIRTIO_NET_HDR_F_DATA_VALID)
        #expect(VirtioNetHeader.gsoTCPv4 == VIRTIO_NET_HDR_GSO_TCPV4)
        #expect(VirtioNetHeader.gsoTCPv6 == VIRTIO_NET_HDR_GSO_TCPV6)
        #expect(VirtioNetHeader.gsoECN == VIRTIO_NET_HDR_GSO_ECN)
        let frame = tcpFrame(payload: 3000, seed: 1, from: .broadcast, to: .broadcast)
        let header = VirtioNetHeader(for: frame, checksum: .blank, gso: NetworkGSO(type: .tcpv4, segmentSize: 1448))
        let buffer = PageBuffer(pages: 1).slice(from: 0, count: VirtioNetHeader.size)
        header?.encode(into: buffer)
        let c = buffer.pointer.load(as: virtio_net_hdr.self)
        #expect(c.flags == 1 && c.gso_type == 1 && c.hdr_len == 54 && c.gso_size == 1448)
        #expect(c.csum_start == 34 && c.csum_offset == 16)
        #expect(VirtioNetHeader(decoding: buffer) == header)
        #expect(
            VirtioNetHeader(
                for: testFrame(size: 100, seed: 1, from: .broadcast, to: .broadcast), checksum: .unverified,
                gso: NetworkGSO(type: .tcpv4, segmentSize: 1)) == nil, "GSO needs TCP")
    }

    @Test func framesCrossATapInterfaceBothWays() async throws {
        let tap = try TapDevice(name: "sxnet\(getpid() % 100_000)")
        #expect(PacketSocket.disableIPv6(tap.name))
        let kernel = try PacketSocket(interface: tap.name)
        try kernel.setLinkUp(true)
        let us = MACAddress.local(seed: 0x5EED)
        // Into the kernel: frames of every size, plain, validated, blank and a 20000-byte GSO frame.
        for (index, size) in [60, 1514, 9000].enumerated() {
            let frame = testFrame(size: size, seed: UInt32(index), from: us, to: tap.mac)
            try await tap.write(NetworkFrame(data: frame, checksum: index == 1 ? .validated : .unverified))
            let seen = kernel.receive(within: 5000) { $0.count == size && testSeed($0) == UInt32(index) }
            #expect(seen?.contentsEqual(frame) == true, "\(size) bytes")
        }
        let gso = tcpFrame(payload: 20000 - 54, seed: 4, from: us, to: tap.mac)
        let expected = PageBuffer(copying: gso.bytes)
        FrameChecksum.setPseudoHeader(expected)
        try await tap.write(NetworkFrame(data: gso, checksum: .blank, gso: NetworkGSO(type: .tcpv4, segmentSize: 1460)))
        let seenGSO = kernel.receive(within: 5000) { $0.count == 20000 }
        #expect(seenGSO?.contentsEqual(expected) == true, "the kernel took the GSO frame whole, checksum partial")

        // Out of the kernel: what is sent on the interface comes out of the TAP device.
        var frames = tap.listen().makeAsyncIterator()
        for (index, size) in [64, 1000, 1514].enumerated() {
            let frame = testFrame(size: size, seed: UInt32(100 + index), from: tap.mac, to: us)
            #expect(kernel.send(frame))
            var received: NetworkFrame?
            while let next = await frames.next() {
                if testSeed(next.data) == UInt32(100 + index) {
                    received = next
                    break
                }
            }
            #expect(received?.data.contentsEqual(frame) == true, "\(size) bytes")
        }
        #expect(tap.statistics.txPackets == 4 && tap.statistics.rxPackets >= 3)
        await tap.disconnect()
        // The interface goes with the last reference to the device's file: ours is closed now, but a child
        // process another test forks at this moment holds a copy until it execs (close-on-exec), so allow that.
        var waited = 0
        while access("/sys/class/net/\(tap.name)", F_OK) == 0, waited < 5000 {
            try await Task.sleep(for: .milliseconds(10))
            waited += 10
        }
        #expect(access("/sys/class/net/\(tap.name)", F_OK) != 0, "the interface went with the device")
    }

    /// A reader far behind: the queue (4 frames) fills, the device is no longer polled, and once the reader
    /// catches up reading resumes: all 40 frames the kernel sent meanwhile arrive, in order.
    @Test func aFullQueuePausesReadingAndRoomResumesIt() async throws {
        let tap = try TapDevice(name: "sxbp\(getpid() % 100_000)", frameQueueCapacity: 4)
        // Disconnect on every path: a device left open stays registered with the reactor.
        var failure: (any Error)?
        do { try await Self.fillThenDrain(tap) } catch { failure = error }
        await tap.disconnect()
        if let failure { throw failure }
    }

    static func fillThenDrain(_ tap: TapDevice) async throws {
        #expect(PacketSocket.disableIPv6(tap.name))
        let kernel = try PacketSocket(interface: tap.name)
        try kernel.setLinkUp(true)
        let us = MACAddress.local(seed: 0xB0B)
        for index in 0..<40 {
            let frame = testFrame(size: 200, seed: UInt32(1000 + index), from: tap.mac, to: us)
            var attempts = 0
            while !kernel.send(frame), attempts < 200 {  // the interface may still be coming up
                attempts += 1
                try await Task.sleep(for: .milliseconds(10))
            }
            try #require(attempts < 200, "frame \(index) could not be sent: errno \(errno)")
        }
        try await Task.sleep(for: .milliseconds(200))  // the queue fills; the rest waits in the kernel
        let frames = tap.listen()
        let seeds = try await withTimeLimit(.seconds(30), timeout: { TapTestTimeout() }) {
            var iterator = frames.makeAsyncIterator()
            var seeds: [UInt32] = []
            while seeds.count < 40, let next = await iterator.next() {
                if let seed = testSeed(next.data), (1000..<1040).contains(seed) { seeds.append(seed) }
            }
            return seeds
        }
        #expect(seeds == (0..<40).map { UInt32(1000 + $0) })
    }
}

struct TapTestTimeout: Error {}
