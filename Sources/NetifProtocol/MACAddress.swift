public import XenCore

/// An Ethernet MAC address, as the `mac` xenstore keys hold it ("00:16:3e:01:02:03").
///
/// OCaml: `Macaddr.t`
public struct MACAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The six bytes, most significant first, in the low 48 bits.
    public let rawValue: UInt64

    /// The address with these six bytes.
    ///
    /// OCaml: `Macaddr.of_octets_exn`
    public init(bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) {
        let parts = [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5]
        rawValue = parts.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The address held in the low 48 bits of `raw`.
    ///
    /// OCaml: none (Macaddr has no integer view)
    public init(rawValue raw: UInt64) { rawValue = raw & 0xFFFF_FFFF_FFFF }

    /// Parses "xx:xx:xx:xx:xx:xx" (hex digits, either case, ':' or '-' separators); nil for anything else.
    ///
    /// OCaml: `Macaddr.of_string`
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        let pieces = parts.count == 6 ? parts : text.split(separator: "-", omittingEmptySubsequences: false)
        guard pieces.count == 6 else { return nil }
        var value: UInt64 = 0
        for piece in pieces {
            guard piece.count == 2, let byte = UInt8(piece, radix: 16) else { return nil }
            value = value << 8 | UInt64(byte)
        }
        rawValue = value
    }

    /// Reads six bytes at `offset` of `buffer` (a frame's destination at 0, source at 6).
    ///
    /// OCaml: `Macaddr.of_octets_exn (Cstruct.to_string (Cstruct.sub buf off 6))`
    public init(from buffer: PageBuffer, at offset: Int) {
        var value: UInt64 = 0
        for index in 0..<6 { value = value << 8 | UInt64(buffer.uint8(at: offset + index)) }
        rawValue = value
    }

    /// Writes the six bytes at `offset` of `buffer`.
    ///
    /// OCaml: `Cstruct.blit_from_string (Macaddr.to_octets mac)`
    public func write(to buffer: PageBuffer, at offset: Int) {
        for (index, byte) in bytes.enumerated() { buffer.setUInt8(byte, at: offset + index) }
    }

    /// The six bytes, most significant first.
    ///
    /// OCaml: `Macaddr.to_octets`
    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> UInt64(40 - 8 * $0)) } }

    /// The broadcast address ff:ff:ff:ff:ff:ff.
    ///
    /// OCaml: `Macaddr.broadcast`
    public static let broadcast = MACAddress(rawValue: 0xFFFF_FFFF_FFFF)

    /// True for group addresses (multicast and broadcast): the low bit of the first byte.
    ///
    /// OCaml: `Macaddr.is_unicast` (negated)
    public var isMulticast: Bool { rawValue & (1 << 40) != 0 }

    /// True for locally administered addresses: the second-lowest bit of the first byte.
    ///
    /// OCaml: `Macaddr.is_local`
    public var isLocallyAdministered: Bool { rawValue & (2 << 40) != 0 }

    /// A locally administered unicast address made from `seed` (as libxl's 00:16:3e prefix is Xen's OUI, a
    /// local address needs no registry).
    ///
    /// OCaml: `Macaddr.make_local`
    public static func local(seed: UInt64) -> MACAddress {
        let value = (seed & 0xFFFF_FFFF_FFFF) | (2 << 40)
        return MACAddress(rawValue: value & ~(1 << 40))
    }

    public static func < (lhs: MACAddress, rhs: MACAddress) -> Bool { lhs.rawValue < rhs.rawValue }

    /// "xx:xx:xx:xx:xx:xx" in lower case, as libxl writes it.
    ///
    /// OCaml: `Macaddr.to_string`
    public var description: String {
        bytes.map { byte in
            let hex = String(byte, radix: 16)
            return hex.count == 1 ? "0" + hex : hex
        }.joined(separator: ":")
    }
}
