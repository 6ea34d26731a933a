/// Everything that can be wrong with bytes received from the other end of a xenstore connection.
///
/// OCaml: `Xs_protocol.Parser.Unknown_operation` / `Parser_failed` and the `Failure`s of `Unmarshal`
public enum XenStoreProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A header announced a payload longer than the limit; the stream cannot be trusted after this.
    /// OCaml: `Xs_protocol.Parser.Parser_failed` (on `allow_oversize_packets = false`)
    case payloadTooLarge(type: XenStoreMessageType, length: UInt32, limit: Int)
    /// A payload does not have the shape its message type requires.
    /// OCaml: `Xs_protocol.Request.parse` returning `None`
    case malformedPayload(type: XenStoreMessageType, reason: String)
    /// A request or reply type this side cannot handle in this direction (a client sending `WATCH_EVENT`,
    /// an unknown number). Servers answer `ENOSYS`. OCaml: `Xs_protocol.Parser.Unknown_operation`
    case unsupportedMessageType(XenStoreMessageType)
    /// A path is empty, too long or holds forbidden characters. Servers answer `EINVAL`.
    /// OCaml: none (xenstored's `is_valid_nodename`)
    case invalidPath(path: String, reason: String)
    /// A reply's type does not belong to the request it answers.
    /// OCaml: `Xs_protocol.Unmarshal` failures ("unexpected packet")
    case unexpectedReply(expected: XenStoreMessageType, received: XenStoreMessageType)

    /// A human-readable account of the problem.
    public var description: String {
        switch self {
        case .payloadTooLarge(let type, let length, let limit):
            "\(type) packet with a \(length)-byte payload (limit \(limit))"
        case .malformedPayload(let type, let reason): "malformed \(type) payload: \(reason)"
        case .unsupportedMessageType(let type): "unsupported message type \(type)"
        case .invalidPath(let path, let reason): "invalid path \"\(path)\": \(reason)"
        case .unexpectedReply(let expected, let received): "expected a \(expected) reply, received \(received)"
        }
    }
}

/// The name of a xenstore error as it travels in an `XS_ERROR` payload (`EINVAL`, `ENOENT`, ...).
///
/// A struct so that names outside xs_wire.h's `xsd_errors[]` (oxenstored's `EQUOTA`) are kept, not rejected.
///
/// OCaml: the `string` of `Xs_protocol.Response.Error`
public struct XenStoreErrorName: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The name as on the wire, without the NUL.
    public var rawValue: String
    /// Wraps any name. OCaml: `Xs_protocol.Response.Error s`
    public init(rawValue: String) { self.rawValue = rawValue }

    /// Invalid argument.
    public static let einval = XenStoreErrorName(rawValue: "EINVAL")
    /// Permission denied.
    public static let eacces = XenStoreErrorName(rawValue: "EACCES")
    /// Already exists.
    public static let eexist = XenStoreErrorName(rawValue: "EEXIST")
    /// Is a directory.
    public static let eisdir = XenStoreErrorName(rawValue: "EISDIR")
    /// No such node.
    public static let enoent = XenStoreErrorName(rawValue: "ENOENT")
    /// Out of memory.
    public static let enomem = XenStoreErrorName(rawValue: "ENOMEM")
    /// Quota exceeded (C xenstored's answer to node/watch/transaction quotas).
    public static let enospc = XenStoreErrorName(rawValue: "ENOSPC")
    /// I/O error.
    public static let eio = XenStoreErrorName(rawValue: "EIO")
    /// Directory not empty.
    public static let enotempty = XenStoreErrorName(rawValue: "ENOTEMPTY")
    /// Operation not implemented.
    public static let enosys = XenStoreErrorName(rawValue: "ENOSYS")
    /// Read-only.
    public static let erofs = XenStoreErrorName(rawValue: "EROFS")
    /// Busy (a transaction id where none is allowed).
    public static let ebusy = XenStoreErrorName(rawValue: "EBUSY")
    /// Transaction conflict: retry.
    public static let eagain = XenStoreErrorName(rawValue: "EAGAIN")
    /// Already connected (domain introduced twice).
    public static let eisconn = XenStoreErrorName(rawValue: "EISCONN")
    /// Reply or argument too big.
    public static let e2big = XenStoreErrorName(rawValue: "E2BIG")
    /// Operation not permitted.
    public static let eperm = XenStoreErrorName(rawValue: "EPERM")
    /// oxenstored's quota error; not in xs_wire.h.
    public static let equota = XenStoreErrorName(rawValue: "EQUOTA")

    /// xs_wire.h's `xsd_errors[]`, in its fixed order.
    public static let wireOrder: [XenStoreErrorName] = [
        .einval, .eacces, .eexist, .eisdir, .enoent, .enomem, .enospc, .eio, .enotempty, .enosys, .erofs, .ebusy,
        .eagain, .eisconn, .e2big, .eperm,
    ]

    /// The name.
    public var description: String { rawValue }
}
