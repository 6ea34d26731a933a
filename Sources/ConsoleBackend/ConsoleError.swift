/// Why a console operation failed. Each case carries the context (path, console, operation) the OCaml
/// failures (`Failure "..."`, `Eof`, `Invalid_console`) lack.
///
/// OCaml: `Mirage_console.error` (`Invalid_console`), `Conback` `Failure`s, `Console_xen` `Eof`
public enum ConsoleError: Error, Sendable, CustomStringConvertible {
    /// The other side broke the ring protocol (impossible indices); the console is disconnected.
    case protocolViolation(ConsoleRingError)
    /// The console was closed (locally, or the peer went away): no more bytes either way.
    case closed
    /// The waiting task was cancelled.
    case cancelled
    /// A xenstore key the protocol needs is missing.
    case missingKey(path: String)
    /// A xenstore key holds something unparsable (written by an untrusted peer).
    case invalidValue(path: String, value: String)
    /// A xenstore operation failed.
    case xenstore(op: String, path: String, underlying: any Error)
    /// Mapping the peer's ring page or granting ours failed.
    case grant(op: String, underlying: any Error)
    /// Binding, allocating or notifying an event channel failed.
    case eventChannel(op: String, underlying: any Error)
    /// A sink (log file, unix socket, pty) failed at the OS level.
    case sink(op: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .protocolViolation(let error): "console protocol violation: \(error)"
        case .closed: "console closed"
        case .cancelled: "cancelled"
        case .missingKey(let path): "missing xenstore key \(path)"
        case .invalidValue(let path, let value): "invalid value \(value.debugDescription) at \(path)"
        case .xenstore(let op, let path, let underlying): "xenstore \(op) \(path): \(underlying)"
        case .grant(let op, let underlying): "grant \(op): \(underlying)"
        case .eventChannel(let op, let underlying): "event channel \(op): \(underlying)"
        case .sink(let op, let path, let errno): "\(op) \(path): errno \(errno)"
        }
    }
}
