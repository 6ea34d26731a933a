/// Constants of the netif ABI (xen/include/public/io/netif.h): slot sizes, limits and statuses.
///
/// OCaml: the constants of mirage-net-xen's `TX`, `RX` and `Netif` modules (`TX.total_size`, `RX.total_size`)
public enum Netif {
    /// `sizeof(struct netif_tx_request)`: gref u32 @0, offset u16 @4, flags u16 @6, id u16 @8, size u16 @10.
    public static let txRequestSize = 12
    /// `sizeof(struct netif_tx_response)`: id u16 @0, status i16 @2.
    public static let txResponseSize = 4
    /// A tx ring entry: the union of request and response (12 bytes).
    public static let txEntrySize = 12
    /// `sizeof(struct netif_rx_request)`: id u16 @0, pad u16 @2, gref u32 @4.
    public static let rxRequestSize = 8
    /// `sizeof(struct netif_rx_response)`: id u16 @0, offset u16 @2, flags u16 @4, status i16 @6.
    public static let rxResponseSize = 8
    /// An rx ring entry: the union of request and response (8 bytes).
    public static let rxEntrySize = 8
    /// `sizeof(struct netif_extra_info)`: type u8, flags u8, six bytes of union (8 bytes; a tx slot pads it to 12).
    public static let extraInfoSize = 8
    /// The largest size a tx request may announce (`XEN_NETIF_MAX_TX_SIZE`), hence the largest frame.
    public static let maxFrameSize = 0xFFFF
    /// Slots a backend must accept for one packet without negotiation (`XEN_NETIF_NR_SLOTS_MIN`).
    public static let minimumSlotsPerPacket = 18
    /// The page a fragment lives in: offset + size never pass it.
    public static let pageSize = 4096
    /// The MTU a frontend assumes when the toolstack wrote no `mtu` key (netif.h "MTU").
    public static let defaultMTU = 1500
    /// Bytes of an Ethernet header (frame lengths count it, the MTU does not).
    public static let ethernetHeaderSize = 14
    /// The MAC a backend presents when nothing else is configured (libxl and mirage-net-xen's convention).
    public static let defaultBackendMAC = MACAddress(bytes: (0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))

    /// Pages (hence rx/tx slots without extras) that `bytes` of frame data occupy when each fragment starts at
    /// offset 0 of its page.
    public static func slots(forFrameOf bytes: Int) -> Int { max(1, (bytes + pageSize - 1) / pageSize) }
}

/// A response status (`NETIF_RSP_*`): tx responses carry one; rx responses carry it when negative.
///
/// OCaml: `TX.Response.status`
public enum NetifStatus: Int16, Sendable, CaseIterable, CustomStringConvertible {
    /// `NETIF_RSP_DROPPED`: the backend dropped the packet.
    case dropped = -2
    /// `NETIF_RSP_ERROR`: the packet was malformed or could not be handled.
    case error = -1
    /// `NETIF_RSP_OKAY`.
    case okay = 0
    /// `NETIF_RSP_NULL`: the slot held an extra-info descriptor, not a request.
    case null = 1

    public var description: String {
        switch self {
        case .dropped: "DROPPED"
        case .error: "ERROR"
        case .okay: "OKAY"
        case .null: "NULL"
        }
    }
}

/// The flags of a tx request (`NETTXF_*`). Bits 0 and 1 mean the opposite of the rx bits of the same value.
///
/// OCaml: `Flags.t` (`Flags.tx_checksum_blank`, `tx_data_validated`, `more_data`, `extra_info`)
public struct NetifTxFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NETTXF_csum_blank`: the protocol checksum field is blank (to be filled in by whoever offloads it).
    public static let checksumBlank = NetifTxFlags(rawValue: 1 << 0)
    /// `NETTXF_data_validated`: the data has been validated against its protocol checksum.
    public static let dataValidated = NetifTxFlags(rawValue: 1 << 1)
    /// `NETTXF_more_data`: the packet continues in the next request.
    public static let moreData = NetifTxFlags(rawValue: 1 << 2)
    /// `NETTXF_extra_info`: extra-info descriptors follow this request.
    public static let extraInfo = NetifTxFlags(rawValue: 1 << 3)
    /// Every bit netif.h defines for tx requests.
    public static let known: NetifTxFlags = [.checksumBlank, .dataValidated, .moreData, .extraInfo]
}

/// The flags of an rx response (`NETRXF_*`).
///
/// OCaml: `Flags.t` (`Flags.rx_data_validated`, `rx_checksum_blank`, `more_data`, `extra_info`)
public struct NetifRxFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `NETRXF_data_validated`: the data has been validated against its protocol checksum.
    public static let dataValidated = NetifRxFlags(rawValue: 1 << 0)
    /// `NETRXF_csum_blank`: the protocol checksum field is blank.
    public static let checksumBlank = NetifRxFlags(rawValue: 1 << 1)
    /// `NETRXF_more_data`: the packet continues in the next response.
    public static let moreData = NetifRxFlags(rawValue: 1 << 2)
    /// `NETRXF_extra_info`: extra-info descriptors follow this response.
    public static let extraInfo = NetifRxFlags(rawValue: 1 << 3)
    /// `NETRXF_gso_prefix`: deprecated GSO prefix descriptor (never sent; refused when received).
    public static let gsoPrefix = NetifRxFlags(rawValue: 1 << 4)
    /// Every bit netif.h defines for rx responses.
    public static let known: NetifRxFlags = [.dataValidated, .checksumBlank, .moreData, .extraInfo, .gsoPrefix]
}
