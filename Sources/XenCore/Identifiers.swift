/// A Xen domain id. Domain 0 is the control domain.
///
/// OCaml: `int` domid (e.g. `Gnt.Gntshr.share_pages ~domid`)
public struct DomainID: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible,
    ExpressibleByIntegerLiteral
{
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ value: UInt16) { self.rawValue = value }
    public init(integerLiteral value: UInt16) { self.rawValue = value }

    /// The control domain.
    public static let dom0 = DomainID(0)
    /// `DOMID_SELF` (0x7ff0): "the calling domain" in hypercalls.
    public static let `self` = DomainID(0x7FF0)

    public static func < (lhs: DomainID, rhs: DomainID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { String(rawValue) }
}

/// An index into a grant table. Printed and parsed as an unsigned 32-bit decimal, as xenstore keys hold it.
///
/// OCaml: `Gnt.gntref`
public struct GrantRef: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible,
    ExpressibleByIntegerLiteral
{
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ value: UInt32) { self.rawValue = value }
    public init(integerLiteral value: UInt32) { self.rawValue = value }

    /// Parses the decimal form found in xenstore (`ring-ref`); nil for anything else.
    ///
    /// OCaml: `Gnt.Gntref.of_string`
    public init?(_ text: String) {
        guard let value = UInt32(text) else { return nil }
        self.rawValue = value
    }

    /// Grant 0 is reserved for the console ring.
    public static let reservedConsole = GrantRef(0)
    /// Grant 1 is reserved for the xenstore ring.
    public static let reservedXenstore = GrantRef(1)

    public static func < (lhs: GrantRef, rhs: GrantRef) -> Bool { lhs.rawValue < rhs.rawValue }
    /// OCaml: `Gnt.Gntref.to_string`
    public var description: String { String(rawValue) }
}

/// An event channel port number, local to one domain.
///
/// OCaml: `Eventchn.t` / `Eventchn.to_int`
public struct EventChannelPort: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible,
    ExpressibleByIntegerLiteral
{
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ value: UInt32) { self.rawValue = value }
    public init(integerLiteral value: UInt32) { self.rawValue = value }

    /// Parses the decimal form found in xenstore (`event-channel`, `port`).
    public init?(_ text: String) {
        guard let value = UInt32(text) else { return nil }
        self.rawValue = value
    }

    public static func < (lhs: EventChannelPort, rhs: EventChannelPort) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { String(rawValue) }
}
