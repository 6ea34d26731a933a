public import XenStoreProtocol

/// Everything a xenstore call can fail with: the server's error replies (one case per `xsd_errors[]` name a
/// caller is likely to handle, the rest as `unknown`), each carrying the path and the operation that failed,
/// plus the client's own failures (connection lost, malformed replies, exhausted transaction retries).
///
/// OCaml: `Xs_protocol.Enoent`, `Eagain`, `Invalid`, `Eexist`, `Error`, and `Xs_client_lwt`'s
/// `Malformed_watch_event`, `Unexpected_rid`, `Dispatcher_failed`, `Response_parser_failed`
public enum XenStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    // MARK: - Error replies from the server

    /// `ENOENT`: no such node. OCaml: `Xs_protocol.Enoent` (which carries the op name, not the path)
    case noEntry(path: String, op: XenStoreMessageType)
    /// `EAGAIN`: a transaction conflict (retry the whole transaction). OCaml: `Xs_protocol.Eagain`
    case eagain(path: String, op: XenStoreMessageType)
    /// `EINVAL`: malformed path or argument. OCaml: `Xs_protocol.Invalid`
    case invalid(path: String, op: XenStoreMessageType)
    /// `EEXIST`: the node or watch already exists. OCaml: `Xs_protocol.Eexist`
    case eexist(path: String, op: XenStoreMessageType)
    /// `EACCES`: the node's permissions deny this domain. OCaml: `Xs_protocol.Error "EACCES"`
    case accessDenied(path: String, op: XenStoreMessageType)
    /// `EPERM`: the operation needs a privileged connection. OCaml: `Xs_protocol.Error "EPERM"`
    case notPermitted(path: String, op: XenStoreMessageType)
    /// `ENOSPC` (C xenstored) or `EQUOTA` (oxenstored): a node, watch or transaction quota is exhausted.
    /// OCaml: `Xs_protocol.Error "EQUOTA"` / `Error "ENOSPC"`
    case quota(path: String, op: XenStoreMessageType)
    /// `E2BIG`: the reply or an argument exceeds the payload limit. OCaml: `Xs_protocol.Error "E2BIG"`
    case tooBig(path: String, op: XenStoreMessageType)
    /// `ENOSYS`: the server does not implement this operation (e.g. `XS_RESTRICT` since Xen 4.9).
    /// OCaml: `Xs_protocol.Error "ENOSYS"`
    case notSupported(path: String, op: XenStoreMessageType)
    /// `EBUSY`: a transaction id where none is allowed, or the transaction is busy.
    /// OCaml: `Xs_protocol.Error "EBUSY"`
    case busy(path: String, op: XenStoreMessageType)
    /// `EISCONN`: the domain is already introduced. OCaml: `Xs_protocol.Error "EISCONN"`
    case alreadyConnected(path: String, op: XenStoreMessageType)
    /// Any other error name: `EISDIR`, `ENOMEM`, `EIO`, `ENOTEMPTY`, `EROFS`, or a name outside xs_wire.h.
    /// OCaml: `Xs_protocol.Error s`
    case unknown(name: String, path: String, op: XenStoreMessageType)

    // MARK: - Conditions of the client

    /// Thrown by a `wait` body while its condition does not hold yet: re-run the body when a read path changes.
    /// OCaml: `Xs_protocol.Eagain` raised by the function given to `Xs_client_lwt.S.wait`
    case again
    /// A transaction kept conflicting (`EAGAIN` at commit) for all attempts of its retry policy.
    /// OCaml: none (`Xs_client_lwt.S.transaction` retries forever)
    case transactionConflict(attempts: Int)
    /// The connection is closed or was lost; requests in flight and new ones fail with this.
    /// OCaml: `Xs_client_lwt.Dispatcher_failed` / `End_of_file`
    case disconnected
    /// A `wait` whose condition still did not hold when its `timeout` ran out; its watches were removed.
    /// OCaml: none (`Xs_client_lwt.S.wait` has no time limit)
    case timedOut(after: Duration)
    /// The client was suspended: watches (and `wait`s blocked on them) are cancelled with this.
    /// OCaml: none (`suspend` wakes watchers with `Lwt.Canceled`)
    case suspended
    /// The request payload exceeds `XENSTORE_PAYLOAD_MAX` (4096 bytes); xenstored would drop the
    /// connection, so it is not sent. OCaml: none (sent anyway)
    case requestTooLarge(path: String, op: XenStoreMessageType, length: Int)
    /// A path or value holds a NUL byte, which the wire format cannot carry.
    /// OCaml: none
    case invalidArgument(path: String, op: XenStoreMessageType, reason: String)
    /// The reply has the type of a different operation. OCaml: `Failure "unexpected packet"` from `Unmarshal`
    case unexpectedReply(path: String, op: XenStoreMessageType, received: XenStoreMessageType)
    /// The reply has the right type but its payload does not parse. OCaml: `Xs_client_lwt.Response_parser_failed`
    case malformedReply(path: String, op: XenStoreMessageType, reason: String)
    /// The byte stream from the server lost framing (garbage, an oversize packet); the connection was dropped.
    /// OCaml: `Xs_protocol.Parser.Parser_failed` (the dispatcher dies)
    case protocolViolation(XenStoreProtocolError)
    /// No xenstore connection could be opened (socket, then xenbus device).
    /// OCaml: `Unix.Unix_error` from `Xs_transport_unix.create`
    case connectionFailed(path: String, errno: Int32)

    // MARK: - Mapping error replies

    /// The error for an `XS_ERROR` reply named `name` to operation `op` on `path`.
    ///
    /// OCaml: `Xs_protocol.Unmarshal` / `Xs_client_lwt.rpc`'s error mapping
    public init(name: String, path: String, op: XenStoreMessageType) {
        switch name {
        case "ENOENT": self = .noEntry(path: path, op: op)
        case "EAGAIN": self = .eagain(path: path, op: op)
        case "EINVAL": self = .invalid(path: path, op: op)
        case "EEXIST": self = .eexist(path: path, op: op)
        case "EACCES": self = .accessDenied(path: path, op: op)
        case "EPERM": self = .notPermitted(path: path, op: op)
        case "ENOSPC", "EQUOTA": self = .quota(path: path, op: op)
        case "E2BIG": self = .tooBig(path: path, op: op)
        case "ENOSYS": self = .notSupported(path: path, op: op)
        case "EBUSY": self = .busy(path: path, op: op)
        case "EISCONN": self = .alreadyConnected(path: path, op: op)
        default: self = .unknown(name: name, path: path, op: op)
        }
    }

    /// True for `.again` and `.eagain`: the conditions `wait` retries on.
    ///
    /// OCaml: none (`with Eagain ->` in `Xs_client_lwt.S.wait`)
    public var isAgain: Bool {
        switch self {
        case .again, .eagain: true
        default: false
        }
    }

    /// True for the server's `EAGAIN`: the transaction conflicted and should be run again.
    ///
    /// OCaml: none (`with Eagain ->` in `Xs_client_lwt.S.transaction`)
    public var isConflict: Bool {
        if case .eagain = self { return true }
        return false
    }

    /// A human-readable account naming the operation and path.
    public var description: String {
        switch self {
        case .noEntry(let path, let op): "\(op) \(path): ENOENT (no such node)"
        case .eagain(let path, let op): "\(op) \(path): EAGAIN (transaction conflict)"
        case .invalid(let path, let op): "\(op) \(path): EINVAL (invalid argument)"
        case .eexist(let path, let op): "\(op) \(path): EEXIST (already exists)"
        case .accessDenied(let path, let op): "\(op) \(path): EACCES (permission denied)"
        case .notPermitted(let path, let op): "\(op) \(path): EPERM (operation not permitted)"
        case .quota(let path, let op): "\(op) \(path): quota exceeded"
        case .tooBig(let path, let op): "\(op) \(path): E2BIG (too big)"
        case .notSupported(let path, let op): "\(op) \(path): ENOSYS (not supported by the server)"
        case .busy(let path, let op): "\(op) \(path): EBUSY (busy)"
        case .alreadyConnected(let path, let op): "\(op) \(path): EISCONN (already introduced)"
        case .unknown(let name, let path, let op): "\(op) \(path): \(name)"
        case .again: "condition not met yet (again)"
        case .transactionConflict(let attempts): "transaction still conflicting after \(attempts) attempts"
        case .disconnected: "xenstore connection lost"
        case .timedOut(let limit): "xenstore wait: condition not met within \(limit)"
        case .suspended: "xenstore client suspended"
        case .requestTooLarge(let path, let op, let length):
            "\(op) \(path): request payload of \(length) bytes exceeds \(XenStoreLimits.payloadMax)"
        case .invalidArgument(let path, let op, let reason): "\(op) \(path): \(reason)"
        case .unexpectedReply(let path, let op, let received): "\(op) \(path): unexpected \(received) reply"
        case .malformedReply(let path, let op, let reason): "\(op) \(path): malformed reply: \(reason)"
        case .protocolViolation(let error): "xenstore stream broken: \(error)"
        case .connectionFailed(let path, let errno): "cannot connect to xenstore at \(path) (errno \(errno))"
        }
    }
}
