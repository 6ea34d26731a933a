/// The `type` field of a xenstore packet header (`enum xsd_sockmsg_type` in xs_wire.h).
///
/// A struct rather than an enum so that a packet with a number this library does not know still parses: the
/// server answers it with `ENOSYS` (as C xenstored does) instead of dropping the connection.
///
/// OCaml: `Xs_protocol.Op.t`
public struct XenStoreMessageType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The wire number.
    public var rawValue: UInt32

    /// Wraps any wire number, known or not.
    ///
    /// OCaml: `Xs_protocol.Op.of_int32`
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// `XS_CONTROL` (alias `XS_DEBUG`): implementation-specific commands. OCaml: `Op.Debug`
    public static let control = XenStoreMessageType(rawValue: 0)
    /// `XS_DIRECTORY`: list a node's children. OCaml: `Op.Directory`
    public static let directory = XenStoreMessageType(rawValue: 1)
    /// `XS_READ`: read a node's value. OCaml: `Op.Read`
    public static let read = XenStoreMessageType(rawValue: 2)
    /// `XS_GET_PERMS`: read a node's permissions. OCaml: `Op.Getperms`
    public static let getPermissions = XenStoreMessageType(rawValue: 3)
    /// `XS_WATCH`: register a watch. OCaml: `Op.Watch`
    public static let watch = XenStoreMessageType(rawValue: 4)
    /// `XS_UNWATCH`: remove a watch. OCaml: `Op.Unwatch`
    public static let unwatch = XenStoreMessageType(rawValue: 5)
    /// `XS_TRANSACTION_START`. OCaml: `Op.Transaction_start`
    public static let transactionStart = XenStoreMessageType(rawValue: 6)
    /// `XS_TRANSACTION_END`. OCaml: `Op.Transaction_end`
    public static let transactionEnd = XenStoreMessageType(rawValue: 7)
    /// `XS_INTRODUCE`: tell the daemon about a new domain. OCaml: `Op.Introduce`
    public static let introduce = XenStoreMessageType(rawValue: 8)
    /// `XS_RELEASE`: forget a domain. OCaml: `Op.Release`
    public static let release = XenStoreMessageType(rawValue: 9)
    /// `XS_GET_DOMAIN_PATH`. OCaml: `Op.Getdomainpath`
    public static let getDomainPath = XenStoreMessageType(rawValue: 10)
    /// `XS_WRITE`. OCaml: `Op.Write`
    public static let write = XenStoreMessageType(rawValue: 11)
    /// `XS_MKDIR`. OCaml: `Op.Mkdir`
    public static let mkdir = XenStoreMessageType(rawValue: 12)
    /// `XS_RM`. OCaml: `Op.Rm`
    public static let rm = XenStoreMessageType(rawValue: 13)
    /// `XS_SET_PERMS`. OCaml: `Op.Setperms`
    public static let setPermissions = XenStoreMessageType(rawValue: 14)
    /// `XS_WATCH_EVENT` (server to client only). OCaml: `Op.Watchevent`
    public static let watchEvent = XenStoreMessageType(rawValue: 15)
    /// `XS_ERROR` (server to client only). OCaml: `Op.Error`
    public static let error = XenStoreMessageType(rawValue: 16)
    /// `XS_IS_DOMAIN_INTRODUCED`. OCaml: `Op.Isintroduced`
    public static let isDomainIntroduced = XenStoreMessageType(rawValue: 17)
    /// `XS_RESUME`. OCaml: `Op.Resume`
    public static let resume = XenStoreMessageType(rawValue: 18)
    /// `XS_SET_TARGET`. OCaml: `Op.Set_target`
    public static let setTarget = XenStoreMessageType(rawValue: 19)
    /// `XS_RESET_WATCHES` (20, `XS_RESTRICT`, was removed in Xen 4.9). OCaml: `Op.Reset_watches`
    public static let resetWatches = XenStoreMessageType(rawValue: 21)
    /// `XS_DIRECTORY_PART`: a directory listing in chunks, for directories too big for one reply.
    /// OCaml: `Op.Directory_part`
    public static let directoryPart = XenStoreMessageType(rawValue: 22)
    /// `XS_INVALID` (0xffff): guaranteed never to be a valid type. OCaml: `Op.Invalid`
    public static let invalid = XenStoreMessageType(rawValue: 0xFFFF)

    /// Every type of Xen 4.17's xs_wire.h (plus `XS_INVALID`), in wire order.
    ///
    /// OCaml: `Xs_protocol.Op.all`
    public static let allKnown: [XenStoreMessageType] = [
        .control, .directory, .read, .getPermissions, .watch, .unwatch, .transactionStart, .transactionEnd,
        .introduce, .release, .getDomainPath, .write, .mkdir, .rm, .setPermissions, .watchEvent, .error,
        .isDomainIntroduced, .resume, .setTarget, .resetWatches, .directoryPart, .invalid,
    ]

    /// The xs_wire.h name without the `XS_` prefix (`READ`, `DIRECTORY_PART`), or the number if unknown.
    ///
    /// OCaml: `Xs_protocol.Op.to_string`
    public var name: String {
        switch rawValue {
        case 0: "CONTROL"
        case 1: "DIRECTORY"
        case 2: "READ"
        case 3: "GET_PERMS"
        case 4: "WATCH"
        case 5: "UNWATCH"
        case 6: "TRANSACTION_START"
        case 7: "TRANSACTION_END"
        case 8: "INTRODUCE"
        case 9: "RELEASE"
        case 10: "GET_DOMAIN_PATH"
        case 11: "WRITE"
        case 12: "MKDIR"
        case 13: "RM"
        case 14: "SET_PERMS"
        case 15: "WATCH_EVENT"
        case 16: "ERROR"
        case 17: "IS_DOMAIN_INTRODUCED"
        case 18: "RESUME"
        case 19: "SET_TARGET"
        case 21: "RESET_WATCHES"
        case 22: "DIRECTORY_PART"
        case 0xFFFF: "INVALID"
        default: "UNKNOWN(\(rawValue))"
        }
    }

    /// Same as `name`.
    public var description: String { name }
}

/// Size limits from xs_wire.h.
///
/// OCaml: `Xs_protocol.xenstore_payload_max` and the path checks of `xenstored`
public enum XenStoreLimits {
    /// `XENSTORE_PAYLOAD_MAX`: the largest payload in either direction. Larger client packets are fatal.
    public static let payloadMax = 4096
    /// `XENSTORE_ABS_PATH_MAX`: the longest absolute path.
    public static let absolutePathMax = 3072
    /// `XENSTORE_REL_PATH_MAX`: the longest relative path (and the longest path below a domain's home).
    public static let relativePathMax = 2048
}
