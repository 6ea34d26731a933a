public import XenCore

/// What a vbd backend sees in xenstore at one moment: the frontend's and its own `state`, the toolstack's
/// `online` key, and whether the frontend's domain still exists. ``VbdBackendStateMachine`` decides from
/// nothing else.
///
/// OCaml: none (mirage-block-xen's `Blkback.run` reads these keys inline)
public struct VbdObservation: Sendable, Equatable {
    /// The frontend's `state` (nil: no key, or its directory is gone; `.unknown` for text that is no state).
    public var frontend: XenbusState?
    /// The backend's own `state` as found: the toolstack writes Closing to detach the device, and a previous
    /// connection leaves Closed.
    public var backend: XenbusState?
    /// False once the toolstack set the backend's `online` key to 0 (a missing key counts as online).
    public var online: Bool
    /// Whether the frontend's domain directory (`/local/domain/N`) exists; false when the frontend's path lies
    /// below no domain directory. Consulted only while the frontend has no state, so an observer may read it
    /// only then.
    public var frontendDomainExists: Bool

    /// An observation of these keys.
    public init(
        frontend: XenbusState?, backend: XenbusState? = nil, online: Bool = true, frontendDomainExists: Bool = true
    ) {
        self.frontend = frontend
        self.backend = backend
        self.online = online
        self.frontendDomainExists = frontendDomainExists
    }
}

/// One step a vbd backend takes: advertise the device, set up or tear down the connection, write its state, or
/// stop serving.
///
/// OCaml: none (mirage-block-xen's `Blkback.run` does these inline; these are Linux xen-blkback's steps in
/// drivers/block/xen-blkback/xenbus.c)
public enum VbdBackendAction: Sendable, Equatable {
    /// Write the features, the device keys (`sectors`, `info`, `sector-size`, …) and `hotplug-status`, and this
    /// state (InitWait, or Connected for a frontend found in Closed), all at once. Linux: `backend_connect`'s
    /// feature writes, then `xenbus_switch_state(InitWait)` in `xen_blkbk_probe`.
    case advertise(offering: XenbusState)
    /// Read the frontend's keys, map its rings, bind its event channels and start the queues (before
    /// announcing Connected). Linux: `connect_ring`, then `xen_blkif_map`.
    case connect
    /// Write this state to the backend's `state` key. Linux: `xenbus_switch_state`.
    case switchState(XenbusState)
    /// Unbind the event channels, wait for the requests in flight, unmap the rings and release the grants.
    /// Linux: `xen_blkif_disconnect`.
    case disconnect
    /// Nothing to serve, and no connection was made: the device went offline or was detached, or the frontend
    /// closed or vanished first. Write Closed (a failure is ignored: the toolstack may be removing the device,
    /// and nothing is held) and stop serving.
    case abandon
    /// The connection is closed and released: stop serving (after the steps before this one).
    case finish
}

/// Why the ``VbdBackendAction/connect`` step failed.
///
/// OCaml: none
public enum VbdConnectFailure: Sendable, Equatable {
    /// Reading the frontend's keys failed in xenstore.
    case xenstore
    /// The frontend's keys are missing or malformed (ring references, event channels, queue count, order).
    case frontendKeys
    /// Mapping a ring or binding an event channel failed.
    case resources
}

/// Where a ``VbdBackendStateMachine`` is in its one connection.
///
/// OCaml: none (Linux xen-blkback reads it off the backend's `xenbus_device` state)
public enum VbdBackendPhase: Sendable, Equatable {
    /// Nothing advertised yet: waiting for a frontend to serve.
    case awaitingFrontend
    /// The device is advertised with this state (InitWait, or Connected to a frontend in Closed); waiting for
    /// the frontend's rings (Initialised, or Connected).
    case offered(XenbusState)
    /// Rings mapped and Connected announced: serving requests.
    case connected
    /// Serving has ended (closed, abandoned or failed); nothing more happens.
    case finished
}

/// The backend half of the blkif xenbus handshake for one connection, as a pure state machine: each
/// observation of xenstore (``VbdObservation``) yields the backend's steps (``VbdBackendAction``); `BlockBack`
/// only reads keys, feeds them in and carries the steps out. A backend serves one connection and finishes;
/// called again on the same directory it starts over (a guest reloading its driver).
///
/// The decisions, in order:
/// - Awaiting a frontend: the toolstack taking the device offline (`online` = 0) abandons it. A frontend with no
///   state is awaited while its domain's directory stands (the toolstack may write its nodes after starting
///   the backend) and abandoned once that is gone (`xl destroy`). A frontend in Closing or Unknown is awaited.
///   A frontend in Closed is awaited until the backend is Closed too (the previous connection is closed on
///   both sides), then offered the device as Connected: Linux's xenbus leaves a rebound blkfront (unbind and
///   bind, rmmod and insmod) in Closed, and it takes no notice of InitWait; it connects when it sees the
///   backend Connected (`talk_to_blkback`, then `blkfront_connect`). Any other frontend (Initialising, as
///   Linux blkback's "prepare for reconnect", or further on) is offered InitWait.
/// - Offered: offline, the toolstack's Closing on the backend, a frontend vanished or Closing abandon the
///   device; Closed abandons it too, unless the device was offered to a frontend in Closed, which may stay
///   there (blkback keeps waiting in InitWait). Initialised, or Connected without Initialised first (a hostile
///   or hasty frontend), connects: rings, then Connected. The rest is awaited.
/// - Connected: the frontend closing, closed or vanished, the backend's state moved off Connected (libxl's
///   remove writes Closing), or a ring the frontend broke (``ringBroken()``) close the connection: Closing,
///   release, Closed. `online` = 0 alone does not: libxl writes Closing with it, and Linux blkback looks at
///   `online` only when the frontend is Closed.
///
/// OCaml: `Blkback.run` (its handshake decisions, which mirage-block-xen interleaves with the xenstore I/O);
/// Linux xen-blkback: `frontend_changed` and `connect` in drivers/block/xen-blkback/xenbus.c
public struct VbdBackendStateMachine: Sendable, Equatable {
    /// Where the machine is.
    public private(set) var phase: VbdBackendPhase = .awaitingFrontend

    /// A backend that has advertised nothing yet.
    public init() {}

    /// True from the ``VbdBackendAction/connect`` step on until the connection is closed.
    public var isConnected: Bool { phase == .connected }

    /// True once serving has ended.
    public var isFinished: Bool { phase == .finished }

    /// The steps for what the backend now sees in xenstore; empty while there is nothing to do but wait for
    /// the next change. An observation that yields no step leaves the machine as it was.
    ///
    /// OCaml: none (Linux xen-blkback: `frontend_changed`, and `xen_blkbk_probe`'s InitWait)
    public mutating func observed(_ seen: VbdObservation) -> [VbdBackendAction] {
        switch phase {
        case .awaitingFrontend: return awaiting(seen)
        case .offered(let offer): return offered(offer, seen)
        case .connected: return connected(seen)
        case .finished: return []
        }
    }

    /// The steps after a queue found the frontend broke its ring: close the connection (Closing, release,
    /// Closed). Nothing when no connection is up.
    ///
    /// OCaml: none (Linux xen-blkback: `xen_blkif_disconnect` on a ring error, then the close `frontend_changed`
    /// leads to)
    public mutating func ringBroken() -> [VbdBackendAction] {
        isConnected ? close() : []
    }

    /// The ``VbdBackendAction/connect`` step failed (what it had set up is already released): announce Closing,
    /// as Linux's `xenbus_dev_fatal` leads the frontend to close, and stop. A xenstore failure is not
    /// announced: the store that failed would carry the news.
    ///
    /// OCaml: none (Linux xen-blkback: `connect_ring`'s and `xen_blkif_map`'s failures in `frontend_changed`)
    public mutating func connectFailed(_ failure: VbdConnectFailure) -> [VbdBackendAction] {
        guard phase == .connected else { return [] }
        phase = .finished
        return failure == .xenstore ? [] : [.switchState(.closing)]
    }

    /// Serving failed outside the ``VbdBackendAction/connect`` step (a xenstore read, wait or write, most
    /// often): release the connection if one is up (Closing, release, Closed) and stop; nothing to release
    /// otherwise. The caller carries the steps out as far as it can and reports the first failure.
    ///
    /// OCaml: none (an exception in `Blkback.run` unwinds without releasing)
    public mutating func failed() -> [VbdBackendAction] {
        if isConnected { return close() }
        phase = .finished
        return []
    }

    private mutating func awaiting(_ seen: VbdObservation) -> [VbdBackendAction] {
        guard seen.online else { return abandon() }
        switch seen.frontend {
        case nil:
            return seen.frontendDomainExists ? [] : abandon()
        case .closed?:
            // Only once the previous connection is closed on both sides.
            return seen.backend == .closed ? advertise(offering: .connected) : []
        case .closing?, .unknown?:
            return []
        case .initialising?, .initWait?, .initialised?, .connected?, .reconfiguring?, .reconfigured?:
            return advertise(offering: .initWait)
        }
    }

    private mutating func offered(_ offer: XenbusState, _ seen: VbdObservation) -> [VbdBackendAction] {
        guard seen.online, seen.backend != .closing else { return abandon() }
        switch seen.frontend {
        case nil, .closing?:
            return abandon()
        case .closed?:
            return offer == .connected ? [] : abandon()
        case .initialised?, .connected?:
            phase = .connected
            return [.connect, .switchState(.connected)]
        case .initialising?, .initWait?, .unknown?, .reconfiguring?, .reconfigured?:
            return []
        }
    }

    private mutating func connected(_ seen: VbdObservation) -> [VbdBackendAction] {
        if seen.backend != .connected { return close() }
        switch seen.frontend {
        case nil, .closing?, .closed?: return close()
        default: return []
        }
    }

    private mutating func advertise(offering offer: XenbusState) -> [VbdBackendAction] {
        phase = .offered(offer)
        return [.advertise(offering: offer)]
    }

    private mutating func abandon() -> [VbdBackendAction] {
        phase = .finished
        return [.abandon]
    }

    private mutating func close() -> [VbdBackendAction] {
        phase = .finished
        return [.switchState(.closing), .disconnect, .switchState(.closed), .finish]
    }
}
