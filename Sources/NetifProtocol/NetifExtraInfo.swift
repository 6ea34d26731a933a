public import XenCore

/// The protocol a GSO descriptor asks the receiver to segment (`XEN_NETIF_GSO_TYPE_*`).
///
/// OCaml: `Extra.gso_type_tcpv4` / `gso_type_tcpv6`
public enum NetifGSOType: UInt8, Sendable, CaseIterable {
    /// `XEN_NETIF_GSO_TYPE_TCPV4` (`feature-gso-tcpv4`).
    case tcpv4 = 1
    /// `XEN_NETIF_GSO_TYPE_TCPV6` (`feature-gso-tcpv6`).
    case tcpv6 = 2
}

/// `struct netif_extra_info`: a descriptor that occupies a ring slot after a request (tx) or response (rx).
///
/// OCaml: `Extra.t` (mirage-net-xen reads GSO only; multicast and hash are netif.h's)
public struct NetifExtraInfo: Sendable, Equatable {
    /// What the descriptor says.
    public enum Kind: Sendable, Equatable {
        /// `XEN_NETIF_EXTRA_TYPE_GSO`: the frame is larger than the MTU and is to be cut into `size`-byte
        /// segments of protocol `type`; `features` are `XEN_NETIF_GSO_FEAT_*` bits (none defined today).
        case gso(size: UInt16, type: NetifGSOType, features: UInt16)
        /// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`: add `address` to the backend's multicast filter.
        case multicastAdd(MACAddress)
        /// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`: remove `address` from it.
        case multicastDelete(MACAddress)
        /// `XEN_NETIF_EXTRA_TYPE_HASH`: the frame's hash `value` of `hashType` by `algorithm`.
        case hash(hashType: UInt8, algorithm: UInt8, value: UInt32)
    }

    /// `XEN_NETIF_EXTRA_TYPE_NONE`, never valid on the wire.
    public static let typeNone: UInt8 = 0
    /// `XEN_NETIF_EXTRA_TYPE_GSO`.
    public static let typeGSO: UInt8 = 1
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
    public static let typeMulticastAdd: UInt8 = 2
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
    public static let typeMulticastDelete: UInt8 = 3
    /// `XEN_NETIF_EXTRA_TYPE_HASH`.
    public static let typeHash: UInt8 = 4
    /// `XEN_NETIF_EXTRA_FLAG_MORE`: another descriptor follows.
    public static let flagMore: UInt8 = 1

    /// The descriptor.
    public var kind: Kind
    /// `XEN_NETIF_EXTRA_FLAG_MORE`.
    public var more: Bool

    /// A descriptor.
    ///
    /// OCaml: `{ Extra.typ; flags; gso_size; gso_type; gso_pad }`
    public init(_ kind: Kind, more: Bool = false) {
        self.kind = kind
        self.more = more
    }

    /// The type byte of this descriptor.
    public var type: UInt8 {
        switch kind {
        case .gso: Self.typeGSO
        case .multicastAdd: Self.typeMulticastAdd
        case .multicastDelete: Self.typeMulticastDelete
        case .hash: Self.typeHash
        }
    }

    /// Writes the 8 descriptor bytes at the start of `slot` (in a tx slot the last 4 bytes are padding: zeroed).
    ///
    /// OCaml: `Extra.write`
    public func encode(into slot: PageBuffer) {
        slot.setUInt8(type, at: 0)
        slot.setUInt8(more ? Self.flagMore : 0, at: 1)
        switch kind {
        case .gso(let size, let gsoType, let features):
            slot.setUInt16(size, at: 2)
            slot.setUInt8(gsoType.rawValue, at: 4)
            slot.setUInt8(0, at: 5)
            slot.setUInt16(features, at: 6)
        case .multicastAdd(let address), .multicastDelete(let address):
            address.write(to: slot, at: 2)
        case .hash(let hashType, let algorithm, let value):
            slot.setUInt8(hashType, at: 2)
            slot.setUInt8(algorithm, at: 3)
            slot.setUInt32(value, at: 4)
        }
        if slot.count >= Netif.txEntrySize { slot.setUInt32(0, at: 8) }
    }

    /// Reads a descriptor from a copy of a slot; an unknown or `NONE` type, or a GSO type netif.h does not
    /// define, is an error.
    ///
    /// OCaml: `Extra.read` (which accepts any type there)
    public static func decode(from slot: PageBuffer) throws(NetifProtocolError) -> NetifExtraInfo {
        let type = slot.uint8(at: 0)
        let flags = slot.uint8(at: 1)
        let more = flags & flagMore != 0
        switch type {
        case typeGSO:
            let raw = slot.uint8(at: 4)
            guard let gsoType = NetifGSOType(rawValue: raw) else { throw .badGSOType(raw) }
            return NetifExtraInfo(
                .gso(size: slot.uint16(at: 2), type: gsoType, features: slot.uint16(at: 6)), more: more)
        case typeMulticastAdd:
            return NetifExtraInfo(.multicastAdd(MACAddress(from: slot, at: 2)), more: more)
        case typeMulticastDelete:
            return NetifExtraInfo(.multicastDelete(MACAddress(from: slot, at: 2)), more: more)
        case typeHash:
            return NetifExtraInfo(
                .hash(hashType: slot.uint8(at: 2), algorithm: slot.uint8(at: 3), value: slot.uint32(at: 4)),
                more: more)
        default:
            throw .badExtraType(type)
        }
    }
}
