import NetifProtocol
import Testing
import XenCore

/// Software checksum offload on hand-built IPv4/UDP, IPv4/TCP and IPv6/TCP frames, with known-good values.
@Suite struct FrameChecksumTests {
    /// An Ethernet + IPv4 + UDP frame carrying `payload`, checksum field zero.
    static func udp4(_ payload: [UInt8]) -> PageBuffer {
        var bytes: [UInt8] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00]
        let total = 20 + 8 + payload.count
        bytes += [
            0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]
        bytes += [0x30, 0x39, 0x00, 0x35, UInt8((8 + payload.count) >> 8), UInt8((8 + payload.count) & 0xFF), 0, 0]
        return PageBuffer(copying: bytes + payload)
    }

    @Test func internetChecksumOfKnownBytes() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2.
        let buffer = PageBuffer(copying: [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7])
        #expect(InternetChecksum.sum(buffer, from: 0, count: 8) == 0xDDF2)
        // Odd lengths pad with a zero byte.
        #expect(InternetChecksum.sum(PageBuffer(copying: [0x01, 0x02, 0x03]), from: 0, count: 3) == 0x0402)
        // Long buffers (the 8-byte loop) agree with a plain word-by-word sum.
        let long = PageBuffer(copying: (0..<1001).map { UInt8(truncatingIfNeeded: $0 &* 37) })
        var plain: UInt32 = 0
        for index in stride(from: 0, to: 1000, by: 2) {
            plain += UInt32(long.uint8(at: index)) << 8 | UInt32(long.uint8(at: index + 1))
        }
        plain += UInt32(long.uint8(at: 1000)) << 8
        #expect(InternetChecksum.sum(long, from: 0, count: 1001) == InternetChecksum.fold(UInt64(plain)))
    }

    @Test func udpOverIPv4CompletesAndVerifies() throws {
        let frame = Self.udp4(Array("hello".utf8))
        let layout = try #require(FrameLayout(frame))
        #expect(layout.transportOffset == 34 && layout.checksumOffset == 40 && layout.transportLength == 13)
        #expect(FrameChecksum.verify(frame) == nil, "UDP/IPv4 checksum 0 means none")
        #expect(FrameChecksum.complete(frame))
        // Worked out independently (python): pseudo header 0a00+0001+0a00+0002+0011+000d, UDP header and "hello".
        #expect(frame.uint16(at: 40).byteSwapped == 0x7791)
        #expect(FrameChecksum.verify(frame) == true)
        frame.setUInt8(frame.uint8(at: 45) ^ 1, at: 45)
        #expect(FrameChecksum.verify(frame) == false)
    }

    @Test func blankChecksumHoldsThePseudoHeaderSum() throws {
        let frame = Self.udp4(Array(repeating: 0x5A, count: 999))
        #expect(FrameChecksum.setPseudoHeader(frame))
        let layout = try #require(FrameLayout(frame))
        #expect(frame.uint16(at: layout.checksumOffset).byteSwapped == layout.pseudoHeaderSum(of: frame))
        let completed = PageBuffer(copying: frame.bytes)
        #expect(FrameChecksum.complete(completed) && FrameChecksum.verify(completed) == true)
    }

    @Test func tcpOverIPv6() throws {
        var bytes: [UInt8] = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xDD]
        let payload = Array(repeating: UInt8(7), count: 100)
        let tcpLength = 20 + payload.count
        bytes += [0x60, 0, 0, 0, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xFF), 6, 64]
        bytes += [0xFD] + Array(repeating: 0, count: 14) + [1] + [0xFD] + Array(repeating: 0, count: 14) + [2]
        bytes += [0x1F, 0x90, 0xC0, 0x00, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
        let frame = PageBuffer(copying: bytes + payload)
        let layout = try #require(FrameLayout(frame))
        #expect(layout.isIPv6 && layout.transportProtocol == FrameLayout.tcp && layout.headerLength == 14 + 40 + 20)
        #expect(FrameChecksum.verify(frame) == false)
        #expect(FrameChecksum.complete(frame) && FrameChecksum.verify(frame) == true)
    }

    @Test func framesWithoutTransportChecksumsAreLeftAlone() {
        let arp = PageBuffer(
            copying: [UInt8](repeating: 0xFF, count: 6) + [2, 0, 0, 0, 0, 1, 0x08, 0x06]
                + Array(repeating: 0, count: 28))
        #expect(FrameLayout(arp) == nil && !FrameChecksum.complete(arp) && FrameChecksum.verify(arp) == nil)
        // An IPv4 header claiming more bytes than the frame has.
        let short = Self.udp4([1, 2, 3])
        short.setUInt16(UInt16(200).byteSwapped, at: 16)
        #expect(FrameLayout(short) == nil)
    }
}
