/// What the other end of a netif ring did that no correct peer does. Each case ends the connection: the
/// device that sees it reports it and disconnects.
///
/// OCaml: mirage-net-xen logs these (`"... is corrupt"`, `Failure "Invalid TX.Response.status"`) and drops the
/// frame or raises; here they carry the values seen
public enum NetifProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A status outside `NETIF_RSP_*`.
    case unknownStatus(Int16, id: UInt16)
    /// An extra-info descriptor of type `NONE` or of a type netif.h does not define.
    case badExtraType(UInt8)
    /// A GSO descriptor naming a protocol netif.h does not define.
    case badGSOType(UInt8)
    /// An extra-info descriptor the receiver did not negotiate (a GSO type it never advertised, multicast
    /// control it never offered, a second descriptor of one type).
    case unexpectedExtra(String)
    /// Flag bits netif.h does not define.
    case unknownFlags(UInt16)
    /// A fragment that does not lie inside its page (`offset + size > 4096`).
    case fragmentOutsidePage(offset: Int, size: Int)
    /// A frame larger than the receiver accepts.
    case frameTooLarge(Int, limit: Int)
    /// A frame shorter than an Ethernet header.
    case runtFrame(Int)
    /// Fragment sizes that do not add up to the size the first request announced.
    case inconsistentSizes(announced: Int, fragments: Int)
    /// More slots for one frame than the receiver accepts (or a multi-slot frame without `feature-sg`).
    case tooManySlots(Int, limit: Int)
    /// A response in a slot whose request carried another id.
    case idMismatch(slot: UInt32, expected: UInt16, got: UInt16)
    /// A response for an id that has no request in flight.
    case unknownID(UInt16)
    /// An rx response with flags that make no sense in its position (extra info on a continuation, a GSO
    /// prefix).
    case badResponseFlags(UInt16)
    /// The ring indices themselves were bad (see `SharedRingError`).
    case ring(String)

    public var description: String {
        switch self {
        case .unknownStatus(let status, let id): "unknown status \(status) for id \(id)"
        case .badExtraType(let type): "extra-info descriptor of unknown type \(type)"
        case .badGSOType(let type): "GSO descriptor of unknown type \(type)"
        case .unexpectedExtra(let why): "unexpected extra-info descriptor: \(why)"
        case .unknownFlags(let flags): "unknown flag bits 0x\(String(flags, radix: 16))"
        case .fragmentOutsidePage(let offset, let size): "fragment of \(size) bytes at offset \(offset) leaves its page"
        case .frameTooLarge(let size, let limit): "frame of \(size) bytes exceeds \(limit)"
        case .runtFrame(let size): "frame of \(size) bytes is shorter than an Ethernet header"
        case .inconsistentSizes(let announced, let fragments):
            "frame announced as \(announced) bytes but its fragments hold \(fragments)"
        case .tooManySlots(let count, let limit): "frame spans \(count) slots, limit \(limit)"
        case .idMismatch(let slot, let expected, let got): "slot \(slot) answered id \(got), request had \(expected)"
        case .unknownID(let id): "response for id \(id), which has no request in flight"
        case .badResponseFlags(let flags): "response flags 0x\(String(flags, radix: 16)) out of place"
        case .ring(let why): "ring: \(why)"
        }
    }
}

/// A xenstore key held a value the other end should not have written.
///
/// OCaml: mirage-net-xen fails with `Failure "Expected an integer: ..."`
public enum NetifKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// `key` holds `value`, which netif.h does not allow there.
    case malformed(key: String, value: String)
    /// A required key is absent.
    case missing(key: String)

    public var description: String {
        switch self {
        case .malformed(let key, let value): "xenstore key \(key) holds malformed value \"\(value)\""
        case .missing(let key): "xenstore key \(key) is missing"
        }
    }
}
