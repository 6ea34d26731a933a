public import BlkifProtocol
public import XenCore

/// Why connecting a block frontend failed, or why a connection ended. Reported by
/// ``BlockFront/connect(device:options:)`` and ``BlockFront/connect(_:store:grants:events:options:)-(String,_,_,_,_)``,
/// and kept as ``BlockFront/failure`` after the backend broke the protocol. Failures of the layers below keep
/// their own typed error in `underlying` (a `XenStoreError` from `XenStoreBus`, a `GrantTableError`, an
/// `EventChannelError`): match on it with `as?`.
///
/// OCaml: `Blkfront.connect` fails with `Failure`/`Xs_protocol.Enoent`; these carry the path and the step
public enum BlockFrontError: Error, Sendable, CustomStringConvertible {
    /// The id is neither a number nor a Linux device name ("xvda", "/dev/sdb").
    case unknownDevice(String)
    /// A xenstore operation failed at `path` (empty: opening the connection) with `underlying`, the xenstore
    /// seam's own error (`XenStoreError` through `XenStoreBus`).
    case xenstore(path: String, underlying: any Error)
    /// A key the backend (or, for `domid`, the toolstack) wrote is absent or malformed.
    case badKey(BlkifKeyError, path: String)
    /// The backend went to a state the handshake cannot continue from.
    case backendState(XenbusState?, path: String)
    /// Granting ring or data pages, or binding the event channel, failed: `underlying` is the grant table's
    /// or event channel's error, when one caused it.
    case resources(String, underlying: (any Error)? = nil)
    /// The backend broke the ring protocol (bad index, unknown id, bad status): the device is disconnected.
    case protocolViolation(String)
    /// The device at frontend directory `path` is already connected — by this process (until that
    /// connection's `disconnect()`), or by another frontend whose state there is Initialised or Connected.
    case alreadyConnected(path: String)

    public var description: String {
        switch self {
        case .unknownDevice(let name): "unknown block device \"\(name)\""
        case .xenstore(let path, let underlying):
            path.isEmpty ? "xenstore: \(underlying)" : "xenstore \(path): \(underlying)"
        case .badKey(let error, let path): "\(path): \(error)"
        case .backendState(let state, let path):
            "backend \(path) went to state \(state.map(\.description) ?? "gone")"
        case .resources(let why, let underlying):
            "block frontend resources: \(why)" + (underlying.map { ": \($0)" } ?? "")
        case .protocolViolation(let why): "backend broke the blkif protocol: \(why)"
        case .alreadyConnected(let path): "block device \(path) is already connected"
        }
    }
}
