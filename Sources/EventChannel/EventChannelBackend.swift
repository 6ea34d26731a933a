public import XenCore

/// One domain's event channels: bind, notify, unbind, and receive notifications as an async sequence.
///
/// Implementations: `XenEventChannel` (real, `/dev/xen/evtchn`) and `SimulatedEventChannel`. Notifications
/// coalesce as Xen's pending bit does: several `notify` calls before the receiver looks count once.
/// OCaml: `Eventchn.handle` (`Eventchn.init`, `bind_unbound_port`, `bind_interdomain`, `notify`, `unbind`)
/// with mirage-xen's `Activations.after` for waiting.
public protocol EventChannelBackend: Sendable {
    /// Allocates a port that `remote` may connect to with ``bindInterdomain(remote:remotePort:)``.
    ///
    /// OCaml: `Eventchn.bind_unbound_port h remote_domid`
    func bindUnboundPort(remote: DomainID) throws(EventChannelError) -> EventChannelPort

    /// Connects a new local port to `remote`'s unbound port `remotePort` (which must name this domain).
    ///
    /// OCaml: `Eventchn.bind_interdomain h remote_domid remote_port`
    func bindInterdomain(remote: DomainID, remotePort: EventChannelPort) throws(EventChannelError)
        -> EventChannelPort

    /// Signals the other end of `port` (a no-op while the port is still unbound, as in Xen).
    ///
    /// OCaml: `Eventchn.notify h port`
    func notify(_ port: EventChannelPort) throws(EventChannelError)

    /// Closes `port`; its notification sequences finish, and the remote end becomes unbound again.
    ///
    /// OCaml: `Eventchn.unbind h port`
    func unbind(_ port: EventChannelPort) throws(EventChannelError)

    /// The notifications arriving on `port`, one element per burst. The sequence finishes when the port is
    /// unbound or the interface closed (immediately if `port` is not bound), and its `next()` returns nil
    /// when the waiting task is cancelled.
    ///
    /// OCaml: `Xen_os.Activations.after port generation` in a loop
    func notifications(_ port: EventChannelPort) -> EventNotifications
}
