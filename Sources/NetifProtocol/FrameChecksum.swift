public import XenCore

/// The RFC 1071 Internet checksum: the one's-complement sum of 16-bit big-endian words.
///
/// OCaml: `Tcpip_checksum.ones_complement` (mirage-tcpip)
public enum InternetChecksum {
    /// The folded (not inverted) sum of `count` bytes at `offset` of `buffer`, as a big-endian word value;
    /// `initial` is added first (a pseudo-header sum).
    public static func sum(_ buffer: PageBuffer, from offset: Int, count: Int, initial: UInt32 = 0) -> UInt16 {
        precondition(offset >= 0 && count >= 0 && offset + count <= buffer.count, "checksum range outside the buffer")
        // Summing native-order words and swapping the folded result is the same as summing big-endian words.
        let base = buffer.pointer + offset
        var total: UInt64 = 0
        var index = 0
        while index + 8 <= count {
            let word = base.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            total &+= word & 0xFFFF_FFFF
            total &+= word >> 32
            index += 8
        }
        while index + 2 <= count {
            total &+= UInt64(base.loadUnaligned(fromByteOffset: index, as: UInt16.self))
            index += 2
        }
        if index < count {
            // The odd last byte is the high byte of a big-endian word: in native little-endian order, the low one.
            total &+= UInt64(base.load(fromByteOffset: index, as: UInt8.self))
        }
        let native = fold(total)
        return fold(UInt64(native.bigEndian) + UInt64(initial))
    }

    /// Folds carries back into 16 bits.
    public static func fold(_ value: UInt64) -> UInt16 {
        var total = value
        while total > 0xFFFF { total = (total & 0xFFFF) + (total >> 16) }
        return UInt16(total)
    }
}

/// Where an Ethernet frame's IP and TCP/UDP headers are, for checksum and segmentation offload.
///
/// OCaml: none (Linux `skb_checksum_setup`, which xen-netback and xen-netfront call on blank checksums)
public struct FrameLayout: Sendable, Equatable {
    /// Offset of the IP header (after the Ethernet header and at most one VLAN tag).
    public var networkOffset: Int
    /// True for IPv6.
    public var isIPv6: Bool
    /// 6 (TCP) or 17 (UDP).
    public var transportProtocol: UInt8
    /// Offset of the TCP/UDP header.
    public var transportOffset: Int
    /// Bytes from the TCP/UDP header to the end of the IP payload.
    public var transportLength: Int
    /// Offset of the checksum field (TCP: +16, UDP: +6).
    public var checksumOffset: Int
    /// Bytes of all headers up to the TCP/UDP payload (TCP: including its options).
    public var headerLength: Int

    /// TCP.
    public static let tcp: UInt8 = 6
    /// UDP.
    public static let udp: UInt8 = 17

    /// Parses `frame`; nil unless it is IPv4 or IPv6 (no extension headers) carrying TCP or UDP, with every
    /// header inside the frame and the IP length consistent with it.
    public init?(_ frame: PageBuffer) {
        var offset = Netif.ethernetHeaderSize
        guard frame.count >= offset + 20 else { return nil }
        var etherType = frame.uint16(at: 12).byteSwapped
        if etherType == 0x8100 {
            etherType = frame.uint16(at: 16).byteSwapped
            offset += 4
        }
        let ipLength: Int
        let payloadOffset: Int
        switch etherType {
        case 0x0800:
            guard frame.count >= offset + 20 else { return nil }
            let versionIHL = frame.uint8(at: offset)
            let headerLength = Int(versionIHL & 0x0F) * 4
            guard versionIHL >> 4 == 4, headerLength >= 20, frame.count >= offset + headerLength else { return nil }
            // Fragments other than the first carry no transport header.
            guard frame.uint16(at: offset + 6).byteSwapped & 0x1FFF == 0 else { return nil }
            ipLength = Int(frame.uint16(at: offset + 2).byteSwapped)
            guard ipLength >= headerLength, offset + ipLength <= frame.count else { return nil }
            transportProtocol = frame.uint8(at: offset + 9)
            payloadOffset = offset + headerLength
            isIPv6 = false
        case 0x86DD:
            guard frame.count >= offset + 40, frame.uint8(at: offset) >> 4 == 6 else { return nil }
            ipLength = 40 + Int(frame.uint16(at: offset + 4).byteSwapped)
            guard offset + ipLength <= frame.count else { return nil }
            transportProtocol = frame.uint8(at: offset + 6)
            payloadOffset = offset + 40
            isIPv6 = true
        default:
            return nil
        }
        networkOffset = offset
        transportOffset = payloadOffset
        transportLength = offset + ipLength - payloadOffset
        switch transportProtocol {
        case Self.tcp:
            guard transportLength >= 20 else { return nil }
            let dataOffset = Int(frame.uint8(at: payloadOffset + 12) >> 4) * 4
            guard dataOffset >= 20, dataOffset <= transportLength else { return nil }
            checksumOffset = payloadOffset + 16
            headerLength = payloadOffset + dataOffset
        case Self.udp:
            guard transportLength >= 8 else { return nil }
            checksumOffset = payloadOffset + 6
            headerLength = payloadOffset + 8
        default:
            return nil
        }
    }

    /// The pseudo-header sum (addresses, protocol, transport length), folded.
    public func pseudoHeaderSum(of frame: PageBuffer) -> UInt16 {
        var total = UInt64(transportProtocol) + UInt64(transportLength)
        let (start, bytes) = isIPv6 ? (networkOffset + 8, 32) : (networkOffset + 12, 8)
        total += UInt64(InternetChecksum.sum(frame, from: start, count: bytes))
        return InternetChecksum.fold(total)
    }
}

/// Software checksum offload for frames whose TCP/UDP checksum was left blank (`NETTXF_csum_blank`,
/// `NETRXF_csum_blank`): what a device does for a peer that did not negotiate checksum offload.
///
/// OCaml: none (Linux `skb_checksum_help`)
public enum FrameChecksum {
    /// Computes and stores the TCP/UDP checksum of `frame`; false when the frame is not TCP/UDP over IP
    /// (then nothing is changed: there is no checksum to fill in).
    @discardableResult
    public static func complete(_ frame: PageBuffer) -> Bool {
        guard let layout = FrameLayout(frame) else { return false }
        frame.setUInt16(0, at: layout.checksumOffset)
        let pseudo = layout.pseudoHeaderSum(of: frame)
        let sum = InternetChecksum.sum(
            frame, from: layout.transportOffset, count: layout.transportLength, initial: UInt32(pseudo))
        var checksum = ~sum
        if checksum == 0, layout.transportProtocol == FrameLayout.udp { checksum = 0xFFFF }
        frame.setUInt16(checksum.byteSwapped, at: layout.checksumOffset)
        return true
    }

    /// Stores the pseudo-header sum in the checksum field: the blank form a peer or the kernel completes
    /// (Linux `CHECKSUM_PARTIAL`). False when the frame is not TCP/UDP over IP.
    @discardableResult
    public static func setPseudoHeader(_ frame: PageBuffer) -> Bool {
        guard let layout = FrameLayout(frame) else { return false }
        frame.setUInt16(layout.pseudoHeaderSum(of: frame).byteSwapped, at: layout.checksumOffset)
        return true
    }

    /// Whether the TCP/UDP checksum of `frame` is right; nil when the frame is not TCP/UDP over IP (or is
    /// UDP over IPv4 without a checksum).
    public static func verify(_ frame: PageBuffer) -> Bool? {
        guard let layout = FrameLayout(frame) else { return nil }
        if layout.transportProtocol == FrameLayout.udp, !layout.isIPv6, frame.uint16(at: layout.checksumOffset) == 0 {
            return nil
        }
        let pseudo = layout.pseudoHeaderSum(of: frame)
        let sum = InternetChecksum.sum(
            frame, from: layout.transportOffset, count: layout.transportLength, initial: UInt32(pseudo))
        return sum == 0xFFFF
    }
}
