import NetifProtocol
import NetworkDevice
import XenCore
import Xenbus

extension NetBack {
    /// Serves the vif until the frontend's directory goes (or it closes while the toolstack unplugs the
    /// device: `online` = 0), or until ``disconnect()``: publishes the features (and `hotplug-status`), then
    /// follows every frontend state change with `VifBackendStateMachine`, setting up and tearing down one
    /// connection after another. A connection the frontend breaks is closed (Closing, then Closed once the
    /// frontend closes) and the next one served. Returns once everything is released.
    ///
    /// OCaml: `Netif.make_backend` + the `wait_for_frontend_closing` thread (one connection there)
    public func serve() async throws(NetBackError) {
        let first = state.withLock { state -> Bool in
            defer { state.serving = true }
            return !state.serving
        }
        guard first else { return }
        var machine = VifBackendStateMachine()
        var failure: NetBackError?
        do {
            try await publishFeatures()
            try await loop(&machine)
        } catch let error as NetBackError {
            failure = error
        } catch {
            failure = .xenstore(path: backendPath, underlying: error)
        }
        if let connection = state.withLock({ state in
            defer { state.connection = nil }; return state.connection
        }) {
            await connection.close()
        }
        if machine.state != .closed {
            try? await store.write(backendPath + "/state", XenbusState.closed.xenstoreValue)
        }
        frames.finish()
        let waiters = state.withLock { state in
            state.finished = true
            defer { state.finishWaiters.removeAll() }
            return state.finishWaiters
        }
        for waiter in waiters { waiter.resume() }
        if let failure {
            logger.debug("vif stopped", metadata: ["error": "\(failure)"])
            throw failure
        }
        logger.debug("vif stopped")
    }

    private func publishFeatures() async throws {
        var pairs = options.features.keys.map { (path: backendPath + "/" + $0.0, value: $0.1) }
        if options.writeHotplugStatus { pairs.append((backendPath + "/" + NetifDeviceKeys.hotplugStatus, "connected")) }
        try await store.write(pairs)
    }

    private func loop(_ machine: inout VifBackendStateMachine) async throws {
        var seen: (state: XenbusState?, online: Bool)?
        var stopHandled = false
        while true {
            let observed = try await nextEvent(after: seen)
            let (stop, force, broken) = state.withLock { state -> (Bool, Bool, String?) in
                defer {
                    state.broken = nil
                    state.stopNoticed = state.stopRequested
                }
                return (state.stopRequested, state.forceStop, state.broken)
            }
            if force { return }
            var actions: [VifBackendAction] = []
            let changed = seen == nil || observed.state != seen?.state || observed.online != seen?.online
            if stop {
                // Our close: Closing once, then follow the frontend only towards Closed.
                if !stopHandled {
                    stopHandled = true
                    actions += machine.closeRequested()
                }
                switch observed.state {
                case .connected?, .initialised?:
                    break  // It has a connection to close first.
                case .closing?, .closed?, .unknown?, nil:
                    actions += machine.frontendChanged(to: observed.state, online: observed.online)
                case .initialising?, .initWait?, .reconfiguring?, .reconfigured?:
                    // A frontend that is not connected has nothing to close: Closed at once.
                    actions += machine.frontendChanged(to: .closed, online: true)
                }
            } else {
                if broken != nil { actions += machine.closeRequested() }
                // After a close of ours, a frontend still Connected must close first: no reconnect on a state
                // it has not left.
                if changed, broken == nil || observed.state != .connected {
                    actions += machine.frontendChanged(to: observed.state, online: observed.online)
                }
            }
            seen = observed
            for action in actions {
                guard try await perform(action, machine: &machine) else { break }
                if action == .remove { return }
            }
            if stop, machine.state == .closed || machine.state == .initialising { return }
        }
    }

    /// Carries out one step; false when a failed connect replaced the rest of the steps.
    private func perform(_ action: VifBackendAction, machine: inout VifBackendStateMachine) async throws -> Bool {
        switch action {
        case .connect:
            do {
                let connection = try await NetBackConnection.open(
                    frontendPath: frontendPath, frontendDomain: frontendDomain, store: store, grants: grants,
                    events: events, options: options, frames: frames, counters: counters, metrics: metrics,
                    multicast: multicast
                ) { [weak self] why in self?.connectionBroke(why) }
                state.withLock { state in
                    state.connection = connection
                    state.connections += 1
                    state.broken = nil
                }
                metrics.connections.increment()
                logger.debug("vif connected", metadata: ["queues": "\(connection.queues.count)"])
            } catch {
                logger.debug("vif connect failed", metadata: ["error": "\(error)"])
                state.withLock { $0.lastBreak = "connect: \(error)" }
                for step in machine.connectFailed() { _ = try await perform(step, machine: &machine) }
                return false
            }
        case .disconnect:
            if let connection = state.withLock({ state in
                defer { state.connection = nil }; return state.connection
            }) {
                await connection.close()
                logger.debug("vif disconnected")
            }
        case .switchState(let next):
            try await store.write(backendPath + "/state", next.xenstoreValue)
        case .remove:
            break
        }
        return true
    }

    /// The frontend's state and the `online` key, once either differs from `seen` or something local
    /// (a stop, a broken queue) needs handling.
    private func nextEvent(after seen: (state: XenbusState?, online: Bool)?) async throws -> (
        state: XenbusState?, online: Bool
    ) {
        let store = store
        let frontendPath = frontendPath
        let onlinePath = backendPath + "/" + NetifDeviceKeys.online
        @Sendable func observe() async throws -> (state: XenbusState?, online: Bool) {
            let frontState = try await store.state(of: frontendPath)
            let online = try await store.read(onlinePath).map { $0.hasPrefix("1") } ?? false
            return (frontState, online)
        }
        let current = try await observe()
        if let seen, current.state == seen.state, current.online == seen.online, !hasLocalEvent {
            let wakeup = wakeup
            let previous = seen
            return try await withThrowingTaskGroup(of: (state: XenbusState?, online: Bool)?.self) { group in
                group.addTask {
                    try await store.wait(watching: [frontendPath + "/state", onlinePath]) {
                        let now = try await observe()
                        return now.state != previous.state || now.online != previous.online ? now : nil
                    }
                }
                group.addTask {
                    await wakeup.wait()
                    return nil
                }
                defer { group.cancelAll() }
                if let first = try await group.next(), let changed = first { return changed }
                return try await observe()
            }
        }
        return current
    }

    private var hasLocalEvent: Bool {
        state.withLock { $0.broken != nil || ($0.stopRequested && !$0.stopNoticed) || $0.forceStop }
    }

    /// A runtime close from our side: Closing, then Closed once the frontend has closed (the directory
    /// stays), and ``serve()`` returns. A frontend that does not close within the close timeout is left:
    /// the connection is torn down and Closed written anyway. Waits for ``serve()`` to finish.
    ///
    /// OCaml: `Netif.disconnect` (backend ending; mirage-net-xen PR #121 "answer a runtime close")
    public func disconnect() async {
        let serving = state.withLock { state -> Bool in
            state.stopRequested = true
            return state.serving && !state.finished
        }
        wakeup.signal()
        guard serving else {
            frames.finish()
            return
        }
        // A frontend that never closes is not waited for beyond the close timeout.
        let limit = options.closeTimeout
        let timer = Task { [weak self] in
            guard (try? await Task.sleep(for: limit)) != nil, let self else { return }
            self.state.withLock { $0.forceStop = true }
            self.wakeup.signal()
        }
        await waitUntilFinished()
        timer.cancel()
    }

    private func waitUntilFinished() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.finished { return true }
                state.finishWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
