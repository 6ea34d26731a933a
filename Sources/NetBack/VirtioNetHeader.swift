import NetifProtocol
public import NetworkDevice
public import XenCore

/// `struct virtio_net_hdr` (10 bytes, little-endian): the offload metadata a TAP device opened with
/// `IFF_VNET_HDR` puts before every frame, both ways. It carries what netif's flags and GSO descriptor carry,
/// so frames cross a NetBack ↔ TAP bridge with their checksum and segmentation offload intact.
///
/// OCaml: none (Linux `include/uapi/linux/virtio_net.h`)
public struct VirtioNetHeader: Sendable, Equatable {
    /// `sizeof(struct virtio_net_hdr)`.
    public static let size = 10
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial (pseudo-header sum).
    public static let needsChecksum: UInt8 = 1
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum has been validated.
    public static let dataValid: UInt8 = 2
    /// `VIRTIO_NET_HDR_GSO_NONE`.
    public static let gsoNone: UInt8 = 0
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    public static let gsoTCPv4: UInt8 = 1
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    public static let gsoTCPv6: UInt8 = 4
    /// `VIRTIO_NET_HDR_GSO_ECN` (a bit on top of the type).
    public static let gsoECN: UInt8 = 0x80

    /// `flags`.
    public var flags: UInt8 = 0
    /// `gso_type`.
    public var gsoType: UInt8 = 0
    /// `hdr_len`: bytes of headers (up to the TCP payload) when GSO is set.
    public var headerLength: UInt16 = 0
    /// `gso_size`: payload bytes per segment.
    public var gsoSize: UInt16 = 0
    /// `csum_start`: where the checksummed range starts.
    public var checksumStart: UInt16 = 0
    /// `csum_offset`: where the checksum field is, from `csum_start`.
    public var checksumOffset: UInt16 = 0

    /// A header with nothing set.
    public init() {}

    /// The header for sending `frame` with `checksum` and `gso`: a blank checksum (or GSO) becomes
    /// `NEEDS_CSUM` over the TCP/UDP header with the pseudo-header sum in place; nil when the frame asks for
    /// an offload it cannot have (GSO or a blank checksum on a frame that is not TCP/UDP over IP).
    public init?(for frame: PageBuffer, checksum: NetworkChecksum, gso: NetworkGSO?) {
        switch checksum {
        case .validated where gso == nil:
            flags = Self.dataValid
        case .unverified where gso == nil:
            break
        default:
            guard let layout = FrameLayout(frame) else {
                if gso != nil { return nil }
                return  // A blank checksum on a frame that has none: nothing to fill in.
            }
            FrameChecksum.setPseudoHeader(frame)
            flags = Self.needsChecksum
            checksumStart = UInt16(layout.transportOffset)
            checksumOffset = UInt16(layout.checksumOffset - layout.transportOffset)
            if let gso {
                guard layout.transportProtocol == FrameLayout.tcp else { return nil }
                gsoType = gso.type == .tcpv4 ? Self.gsoTCPv4 : Self.gsoTCPv6
                gsoSize = UInt16(clamping: gso.segmentSize)
                headerLength = UInt16(layout.headerLength)
            }
        }
    }

    /// Writes the 10 bytes at the start of `buffer`.
    public func encode(into buffer: PageBuffer) {
        buffer.setUInt8(flags, at: 0)
        buffer.setUInt8(gsoType, at: 1)
        buffer.setUInt16(headerLength, at: 2)
        buffer.setUInt16(gsoSize, at: 4)
        buffer.setUInt16(checksumStart, at: 6)
        buffer.setUInt16(checksumOffset, at: 8)
    }

    /// Reads the 10 bytes at the start of `buffer`.
    public init(decoding buffer: PageBuffer) {
        flags = buffer.uint8(at: 0)
        gsoType = buffer.uint8(at: 1)
        headerLength = buffer.uint16(at: 2)
        gsoSize = buffer.uint16(at: 4)
        checksumStart = buffer.uint16(at: 6)
        checksumOffset = buffer.uint16(at: 8)
    }

    /// The checksum state of a frame that arrived with this header.
    public var checksum: NetworkChecksum {
        flags & Self.needsChecksum != 0 ? .blank : flags & Self.dataValid != 0 ? .validated : .unverified
    }

    /// The GSO description of a frame that arrived with this header (nil: none, or a type netif cannot carry).
    public var gso: NetworkGSO? {
        switch gsoType & ~Self.gsoECN {
        case Self.gsoTCPv4 where gsoSize > 0: NetworkGSO(type: .tcpv4, segmentSize: Int(gsoSize))
        case Self.gsoTCPv6 where gsoSize > 0: NetworkGSO(type: .tcpv6, segmentSize: Int(gsoSize))
        default: nil
        }
    }
}
