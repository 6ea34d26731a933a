public import BlockDevice
public import NBDProtocol

/// Why an NBD operation failed. Request-level failures (`serverError`, `timedOut`, `unsupported`,
/// `invalidRequest`, `readOnly`) leave the connection usable; the others end it, and every request in
/// flight on it fails with the same error.
///
/// OCaml: `Nbd.Client.error` (`Protocol_error of Protocol.Error.t` plus `Mirage_block.error`)
public enum NBDError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The socket could not be opened.
    case connectFailed(endpoint: String, reason: String)
    /// The server broke the protocol (hostile or buggy); the connection was dropped.
    case protocolError(NBDProtocolError)
    /// The server refused an option the client could not do without.
    case optionRejected(option: NBDOption, NBDOptionError)
    /// TLS was required (an `nbds` URI) but the server cannot do it: never falls back to plaintext.
    case tlsUnavailable(String)
    /// The TLS handshake or certificate check failed.
    case tlsFailed(String)
    /// The server answered a request with an error.
    ///
    /// OCaml: `Protocol_error` polymorphic variant (the errno of a simple reply)
    case serverError(command: NBDCommand, offset: UInt64, errno: NBDErrno, message: String)
    /// The connection is closed (by `disconnect`, the server, or an earlier failure).
    ///
    /// OCaml: `Disconnected` (polymorphic variant)
    case disconnected
    /// A connect or request timeout fired.
    case timedOut(operation: String)
    /// The server does not offer this command or flag.
    ///
    /// OCaml: `Unimplemented` (polymorphic variant)
    case unsupported(String)
    /// Bad arguments (misaligned, beyond the end, too large).
    case invalidRequest(String)
    /// The export is read-only.
    ///
    /// OCaml: `Is_read_only` (polymorphic variant)
    case readOnly
    /// Some other I/O failure of the transport.
    case io(String)

    /// A readable rendering.
    public var description: String {
        switch self {
        case .connectFailed(let endpoint, let reason): "cannot connect to \(endpoint): \(reason)"
        case .protocolError(let error): "NBD protocol error: \(error)"
        case .optionRejected(let option, let error): "server rejected option \(option): \(error)"
        case .tlsUnavailable(let why): "TLS required but unavailable: \(why)"
        case .tlsFailed(let why): "TLS failed: \(why)"
        case .serverError(let command, let offset, let errno, let message):
            "server error \(errno) for \(command) at \(offset)\(message.isEmpty ? "" : ": \(message)")"
        case .disconnected: "NBD connection closed"
        case .timedOut(let operation): "timed out: \(operation)"
        case .unsupported(let what): "not supported by the server: \(what)"
        case .invalidRequest(let why): "invalid request: \(why)"
        case .readOnly: "the export is read-only"
        case .io(let why): "NBD I/O error: \(why)"
        }
    }

    /// The `Mirage_block` error this maps to.
    ///
    /// OCaml: `Nbd.Client.pp_error` (the mapping of protocol errors onto `Mirage_block.error`)
    public var blockError: BlockError {
        switch self {
        case .disconnected: .disconnected
        case .readOnly: .isReadOnly
        case .unsupported(let what): .unimplemented(operation: what)
        case .invalidRequest(let why): .invalidRequest(why)
        default: .io(context: description, underlying: self)
        }
    }
}

/// Why `list` returned no names.
///
/// OCaml: the `Policy | Unsupported` polymorphic variants of `Nbd.Client.list` (+ TLS and connection failures)
public enum NBDListError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The server disabled listing deliberately (`NBD_REP_ERR_POLICY`).
    ///
    /// OCaml: `Policy` (polymorphic variant)
    case policy
    /// The server lists exports only over TLS (`NBD_REP_ERR_TLS_REQD`): connect with TLS options.
    case tlsRequired
    /// The server cannot list: oldstyle or plain newstyle, or `NBD_OPT_LIST` answered with
    /// `NBD_REP_ERR_UNSUP` (or another error, kept here).
    ///
    /// OCaml: `Unsupported` (polymorphic variant)
    case unsupported(NBDOptionError?)
    /// The connection, TLS or the protocol failed before the server answered.
    case failed(NBDError)

    /// A readable rendering.
    public var description: String {
        switch self {
        case .policy: "the server does not allow listing exports"
        case .tlsRequired: "the server lists exports only over TLS"
        case .unsupported(let error?): "the server cannot list exports (\(error))"
        case .unsupported(nil): "the server cannot list exports"
        case .failed(let error): "listing exports failed: \(error)"
        }
    }
}
