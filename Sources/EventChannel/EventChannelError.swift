public import XenCore

/// Everything an event-channel operation can fail with.
///
/// OCaml: `Eventchn` raises `Failure` / `Unix_error` without context; these carry the port and domain.
public enum EventChannelError: Error, Equatable, Sendable {
    /// The port is not bound in this domain.
    case invalidPort(EventChannelPort)
    /// `bindInterdomain` to a remote port that is not unbound (already connected, or not a port).
    case notUnbound(domain: DomainID, port: EventChannelPort)
    /// `bindInterdomain` to an unbound port that was allocated for another domain.
    case permissionDenied(domain: DomainID, port: EventChannelPort)
    /// The remote domain does not exist (or was destroyed).
    case noSuchDomain(DomainID)
    /// No free port left.
    case noFreePort
    /// `/dev/xen/evtchn` could not be opened: Xen is not running here, the module is missing, or permission.
    case interfaceUnavailable(device: String, errno: Int32)
    /// A libxenevtchn call failed.
    case system(operation: String, errno: Int32)
    /// The interface was closed.
    case closed
}
