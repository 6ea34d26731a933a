public import BlkifProtocol
public import XenCore

/// Why connecting a block frontend failed, or why a connection ended. Reported by
/// ``BlockFront/connect(_:store:grants:events:options:)`` and kept as ``BlockFront/failure`` after the backend
/// broke the protocol.
///
/// OCaml: `Blkfront.connect` fails with `Failure`/`Xs_protocol.Enoent`; these carry the path and the step
public enum BlockFrontError: Error, Sendable, CustomStringConvertible {
    /// The id is neither a number nor a Linux device name ("xvda", "/dev/sdb").
    case unknownDevice(String)
    /// A xenstore operation failed at `path`.
    case xenstore(path: String, underlying: String)
    /// A key the backend wrote is absent or malformed.
    case badKey(BlkifKeyError, path: String)
    /// The backend went to a state the handshake cannot continue from.
    case backendState(XenbusState?, path: String)
    /// Granting ring or data pages, or binding the event channel, failed.
    case resources(String)
    /// The backend broke the ring protocol (bad index, unknown id, bad status): the device is disconnected.
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .unknownDevice(let name): "unknown block device \"\(name)\""
        case .xenstore(let path, let underlying): "xenstore \(path): \(underlying)"
        case .badKey(let error, let path): "\(path): \(error)"
        case .backendState(let state, let path):
            "backend \(path) went to state \(state.map(\.description) ?? "gone")"
        case .resources(let why): "block frontend resources: \(why)"
        case .protocolViolation(let why): "backend broke the blkif protocol: \(why)"
        }
    }
}
