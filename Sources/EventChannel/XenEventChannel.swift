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
/// One dedicated thread per interface polls the evtchn fd (never a cooperative-pool thread), reads the
/// pending port, unmasks it and wakes the tasks iterating that port's ``EventNotifications``. Binding,
/// notifying and unbinding are non-blocking ioctls made directly. Opening fails with `.interfaceUnavailable`
/// where `/dev/xen/evtchn` is missing, without libxen writing to stderr.
/// OCaml: `Eventchn.handle` + mirage-xen's `Activations`
public final class XenEventChannel: EventChannelBackend, @unchecked Sendable {
    // @unchecked: `handle` is used only through libxenevtchn's thread-safe ioctls and read(); the poll thread
    // is joined before the handle closes; `state` is a Mutex.
    private let handle: OpaquePointer
    private let signals = EventPortSignals()
    /// Wakes the poll thread to exit.
    private let wake: WakeSignal
    private let state: Mutex<(closed: Bool, thread: JoinableThread?)>

    /// The device node this backend opens.
    public static let device = "/dev/xen/evtchn"

    /// Opens `/dev/xen/evtchn` and starts the poll thread.
    ///
    /// OCaml: `Eventchn.init`
    public init() throws(EventChannelError) {
        guard let handle = xenevtchn_open(QuietLogger.pointer, 0) else {
            throw .interfaceUnavailable(device: Self.device, errno: errno)
        }
        let wake: WakeSignal
        do { wake = try WakeSignal() } catch {
            xenevtchn_close(handle)
            throw .system(operation: "pipe", errno: error.errno)
        }
        self.handle = handle
        self.wake = wake
        let loop = PollLoop(handle: handle, fd: xenevtchn_fd(handle), wake: wake, signals: signals)
        // Joinable, not detached: `close` frees the handle the thread polls only after the thread has ended.
        let thread: JoinableThread
        do throws(ThreadStartError) {
            thread = try JoinableThread { loop.run() }
        } catch {
            xenevtchn_close(handle)
            throw .system(operation: "pthread_create", errno: error.errno)
        }
        self.state = Mutex((false, thread))
    }

    deinit { close() }

    /// Stops the poll thread, finishes every notification sequence and closes the device.
    ///
    /// OCaml: `Eventchn.close` (not in mirage-xen, where the handle lives forever)
    public func close() {
        let thread: JoinableThread? = state.withLock { state in
            guard !state.closed else { return nil }
            state.closed = true
            defer { state.thread = nil }
            return state.thread
        }
        guard let thread else { return }
        wake.signal()
        thread.join()
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

// MARK: - Poll thread

/// The body of the poll thread.
private final class PollLoop: @unchecked Sendable {
    // @unchecked: used by exactly one thread after hand-over.
    let handle: OpaquePointer
    let fd: Int32
    let wake: WakeSignal
    let signals: EventPortSignals

    init(handle: OpaquePointer, fd: Int32, wake: WakeSignal, signals: EventPortSignals) {
        self.handle = handle
        self.fd = fd
        self.wake = wake
        self.signals = signals
    }

    func run() {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), wake.pollEntry]
        while true {
            fds[0].revents = 0
            fds[1].revents = 0
            let rc = poll(&fds, 2, -1)
            if rc < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 { return }
            if fds[0].revents & Int16(POLLIN) != 0 {
                let port = xenevtchn_pending(handle)
                if port >= 0 {
                    // Unmask first: an event arriving meanwhile sets the pending bit and is not lost.
                    _ = xenevtchn_unmask(handle, UInt32(port))
                    signals.signal(EventChannelPort(UInt32(port)))
                }
            } else if fds[0].revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
                return
            }
        }
    }
}
