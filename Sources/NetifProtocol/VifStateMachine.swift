public import XenCore

/// One step a vif backend takes: write its state, set up or tear down the data path, or stop serving.
///
/// OCaml: none (mirage-net-xen has no state machine; these are Linux xen-netback's `set_backend_state` steps)
public enum VifBackendAction: Sendable, Equatable {
    /// Read the frontend's keys, map its rings, bind its channels (before announcing Connected).
    case connect
    /// Unbind, join the queue tasks, unmap the rings (before announcing Closing).
    case disconnect
    /// Write this state to the backend's `state` key.
    case switchState(XenbusState)
    /// The frontend is gone for good (or Closed while the toolstack unplugs us): stop serving this vif.
    case remove
}

/// The backend half of the vif xenbus handshake, as a pure state machine: each frontend state change yields
/// the backend's steps. It follows Linux xen-netback (`frontend_changed` / `set_backend_state`), so a
/// frontend may close before it ever connects (Windows' PV drivers do), jump straight to Closed, close at
/// runtime, and connect again afterwards: the backend always answers Closing then Closed, and returns to
/// InitWait when the frontend reinitialises.
///
/// OCaml: none (mirage-net-xen PR #121 asks for exactly this; issue #61: "netback doesn't respond to close
/// requests"; PR #89: "Cope with frontend going directly to Closed state")
public struct VifBackendStateMachine: Sendable, Equatable {
    /// The state last announced.
    public private(set) var state: XenbusState = .initialising
    /// True while the data path is set up.
    public private(set) var isConnected = false

    /// A backend that has announced nothing yet (Initialising).
    public init() {}

    /// The steps for the frontend's new `frontend` state (nil: its directory or state key is gone).
    /// `online` is the toolstack's `online` key: a Closed frontend of an offline device ends the service.
    public mutating func frontendChanged(to frontend: XenbusState?, online: Bool) -> [VifBackendAction] {
        switch frontend {
        case .initialising?:
            return moveTo(.initWait)
        case .initWait?, .initialised?, .reconfiguring?, .reconfigured?:
            // The keys come with Connected (Linux netfront writes them, then Connected); Initialised on its
            // own changes nothing, as in Linux.
            return state == .initialising ? moveTo(.initWait) : []
        case .connected?:
            return moveTo(.connected)
        case .closing?:
            return moveTo(.closing)
        case .closed?:
            var steps = moveTo(.closed)
            if !online { steps.append(.remove) }
            return steps
        case .unknown?, nil:
            return moveTo(.closed) + [.remove]
        }
    }

    /// The steps of a runtime close requested on our side: Closing now (the frontend then closes and we
    /// follow it to Closed through ``frontendChanged(to:online:)``); nothing when there is nothing to close
    /// (never announced anything, or already Closed).
    public mutating func closeRequested() -> [VifBackendAction] {
        state == .initialising || state == .closed ? [] : moveTo(.closing)
    }

    /// The connection could not be set up (bad keys, resources): announce Closing, as Linux's
    /// `xenbus_dev_fatal` leads the frontend to close.
    public mutating func connectFailed() -> [VifBackendAction] {
        isConnected = false
        state = .closing
        return [.switchState(.closing)]
    }

    /// Walks the shortest legal path from the current state to `target` (Linux's `set_backend_state` graph:
    /// Initialising → InitWait → Connected; InitWait/Connected → Closing ↔ Closed → InitWait).
    private mutating func moveTo(_ target: XenbusState) -> [VifBackendAction] {
        var steps: [VifBackendAction] = []
        var guardSteps = 0
        while state != target, guardSteps < 8 {
            guardSteps += 1
            let next: XenbusState
            switch (state, target) {
            case (.initialising, .closed): next = .closed
            case (.initialising, _): next = .initWait
            case (.closed, .closing): next = .closing
            case (.closed, _): next = .initWait
            case (.initWait, .connected):
                steps.append(.connect)
                isConnected = true
                next = .connected
            case (.initWait, _): next = .closing
            case (.connected, _):
                steps.append(.disconnect)
                isConnected = false
                next = .closing
            case (.closing, _): next = .closed
            default: next = target
            }
            state = next
            steps.append(.switchState(next))
        }
        return steps
    }
}

/// What a frontend does when it finds the backend in a given state at connect time: proceed, wait, or first
/// lead a backend left Connected or Closing by an earlier frontend back to InitWait through Closing and
/// Closed (as Windows' xenvif and mini-os do).
///
/// OCaml: none (mirage-net-xen's frontend waits for Connected only; mini-os `netfront` shutdown sequence)
public enum VifFrontendStep: Sendable, Equatable {
    /// The backend published its features: write ours and the rings, then go Connected.
    case publish
    /// Keep waiting for the backend.
    case wait
    /// The backend still holds an old connection: write Closing, wait for it to close, write Closed, wait,
    /// then Initialising.
    case resetBackend
    /// The backend closed an earlier connection and waits for a frontend: write Initialising, then wait.
    case reinitialise
    /// The backend is gone: give up.
    case fail

    /// The step for a backend found in `backend` (nil: no state key).
    public init(backend: XenbusState?) {
        switch backend {
        case .initWait?: self = .publish
        case .initialising?, .unknown?, .reconfiguring?, .reconfigured?: self = .wait
        case .initialised?, .connected?, .closing?: self = .resetBackend
        case .closed?: self = .reinitialise
        case nil: self = .fail
        }
    }
}
