import CXen
import Synchronization
public import XenCore
import XenToolLog

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The real event channels over libxenevtchn (`/dev/xen/evtchn`).
///
/// XenCore's shared `IOReactor` thread polls the evtchn fd (never a cooperative-pool thread), reads the
/// pending port, unmasks it and wakes the tasks iterating that port's ``EventNotifications``. Binding,
/// notifying and unbinding are non-blocking ioctls made directly. Opening fails with `.interfaceUnavailable`
/// where `/dev/xen/evtchn` is missing, without libxen writing to stderr.
/// OCaml: `Eventchn.handle` + mirage-xen's `Activations`
public final class XenEventChannel: EventChannelBackend, @unchecked Sendable {
    // @unchecked: `handle` is used only through libxenevtchn's thread-safe ioctls and read(); the reactor's
    // registration is removed (synchronously) before the handle closes; `state` is a Mutex.
    private let handle: OpaquePointer
    private let signals = EventPortSignals()
    private let reactor: IOReactor
    private let state: Mutex<(closed: Bool, registration: IOReactorRegistration?)>

    /// The device node this backend opens.
    public static let device = "/dev/xen/evtchn"

    /// Opens `/dev/xen/evtchn` and has the reactor poll it.
    ///
    /// OCaml: `Eventchn.init`
    public init() throws(EventChannelError) {
        guard let handle = xenevtchn_open(QuietLogger.pointer, 0) else {
            throw .interfaceUnavailable(device: Self.device, errno: errno)
        }
        let reactor: IOReactor
        do { reactor = try IOReactor.shared() } catch {
            xenevtchn_close(handle)
            throw .system(operation: "starting the I/O reactor", errno: error.errno)
        }
        self.handle = handle
        self.reactor = reactor
        let signals = self.signals
        let device = DeviceHandle(pointer: handle)
        let registration: IOReactorRegistration
        do {
            registration = try reactor.register(xenevtchn_fd(handle), events: Int16(POLLIN)) { revents in
                let handle = device.pointer
                guard revents & Int16(POLLIN) != 0 else {
                    // POLLERR/POLLHUP/POLLNVAL without data: the device failed; stop polling it.
                    return false
                }
                let port = xenevtchn_pending(handle)
                if port >= 0 {
                    // Unmask first: an event arriving meanwhile sets the pending bit and is not lost.
                    _ = xenevtchn_unmask(handle, UInt32(port))
                    signals.signal(EventChannelPort(UInt32(port)))
                }
                return true
            }
        } catch {
            xenevtchn_close(handle)
            throw .system(operation: "starting the I/O reactor", errno: error.errno)
        }
        self.state = Mutex((false, registration))
    }

    deinit { close() }

    /// Stops polling, finishes every notification sequence and closes the device.
    ///
    /// OCaml: `Eventchn.close` (not in mirage-xen, where the handle lives forever)
    public func close() {
        let registration: IOReactorRegistration? = state.withLock { state in
            guard !state.closed else { return nil }
            state.closed = true
            defer { state.registration = nil }
            return state.registration
        }
        guard let registration else { return }
        // Synchronous: the reactor no longer calls into `handle` once this returns.
        reactor.deregister(registration)
        signals.closeAll()
        xenevtchn_close(handle)
    }

    private func checkOpen() throws(EventChannelError) {
        if state.withLock({ $0.closed }) { throw .closed }
    }

    /// OCaml: `Eventchn.bind_unbound_port`
    public func bindUnboundPort(remote: DomainID) throws(EventChannelError) -> EventChannelPort {
        try checkOpen()
        let port = xenevtchn_bind_unbound_port(handle, UInt32(remote.rawValue))
        guard port >= 0 else { throw .system(operation: "xenevtchn_bind_unbound_port", errno: errno) }
        let result = EventChannelPort(UInt32(port))
        signals.open(result)
        return result
    }

    /// OCaml: `Eventchn.bind_interdomain`
    public func bindInterdomain(
        remote: DomainID, remotePort: EventChannelPort
    ) throws(EventChannelError) -> EventChannelPort {
        try checkOpen()
        let port = xenevtchn_bind_interdomain(handle, UInt32(remote.rawValue), remotePort.rawValue)
        guard port >= 0 else { throw .system(operation: "xenevtchn_bind_interdomain", errno: errno) }
        let result = EventChannelPort(UInt32(port))
        signals.open(result)
        return result
    }

    /// OCaml: `Eventchn.notify`
    public func notify(_ port: EventChannelPort) throws(EventChannelError) {
        try checkOpen()
        guard xenevtchn_notify(handle, port.rawValue) == 0 else {
            throw .system(operation: "xenevtchn_notify", errno: errno)
        }
    }

    /// OCaml: `Eventchn.unbind`
    public func unbind(_ port: EventChannelPort) throws(EventChannelError) {
        try checkOpen()
        signals.close(port)
        guard xenevtchn_unbind(handle, port.rawValue) == 0 else {
            throw .system(operation: "xenevtchn_unbind", errno: errno)
        }
    }

    /// OCaml: `Xen_os.Activations.after`
    public func notifications(_ port: EventChannelPort) -> EventNotifications { signals.notifications(port) }
}

/// The evtchn handle as the reactor's handler holds it: libxenevtchn's pending/unmask calls are thread-safe, and
/// the handler never runs after `close` deregistered it, before the handle is freed.
private struct DeviceHandle: @unchecked Sendable {
    let pointer: OpaquePointer
}
