public import EventChannel
public import XenCore

/// One simulated domain's event channels.
///
/// Ports are allocated lowest-free from 1. `notify` on a connected port signals the remote port, where
/// notifications coalesce until the receiver's next `next()`: exactly one wake per burst. Unbinding makes
/// the remote end unbound again (as Xen's `EVTCHNOP_close`), so it can be re-bound.
/// OCaml: `Eventchn.handle` of one domain
public struct SimulatedEventChannel: EventChannelBackend {
    let hypervisor: SimulatedHypervisor
    /// The domain these channels belong to.
    public let domain: DomainID
    let signals: EventPortSignals

    /// OCaml: `Eventchn.bind_unbound_port`
    public func bindUnboundPort(remote: DomainID) throws(EventChannelError) -> EventChannelPort {
        let maxPorts = hypervisor.maxPorts
        let result: Result<UInt32, EventChannelError> = hypervisor.state.withLock { state in
            guard let record = state.domains[domain] else { return .failure(.noSuchDomain(domain)) }
            guard let port = Self.lowestFree(record.ports, maxPorts) else { return .failure(.noFreePort) }
            state.domains[domain]?.ports[port] = .unbound(remote: remote)
            return .success(port)
        }
        let port = EventChannelPort(try result.get())
        signals.open(port)
        return port
    }

    /// OCaml: `Eventchn.bind_interdomain`
    public func bindInterdomain(
        remote: DomainID, remotePort: EventChannelPort
    ) throws(EventChannelError) -> EventChannelPort {
        let maxPorts = hypervisor.maxPorts
        let result: Result<UInt32, EventChannelError> = hypervisor.state.withLock { state in
            guard state.domains[domain] != nil else { return .failure(.noSuchDomain(domain)) }
            guard let remoteRecord = state.domains[remote] else { return .failure(.noSuchDomain(remote)) }
            switch remoteRecord.ports[remotePort.rawValue] {
            case .unbound(let allowed) where allowed == domain:
                break
            case .unbound:
                return .failure(.permissionDenied(domain: remote, port: remotePort))
            case .interdomain, nil:
                return .failure(.notUnbound(domain: remote, port: remotePort))
            }
            // Read our table after the checks: for a loopback bind, `remote` is this very domain.
            guard let local = state.domains[domain], let port = Self.lowestFree(local.ports, maxPorts) else {
                return .failure(.noFreePort)
            }
            state.domains[domain]?.ports[port] = .interdomain(remote: remote, remotePort: remotePort.rawValue)
            state.domains[remote]?.ports[remotePort.rawValue] = .interdomain(remote: domain, remotePort: port)
            return .success(port)
        }
        let port = EventChannelPort(try result.get())
        signals.open(port)
        return port
    }

    /// OCaml: `Eventchn.notify`
    public func notify(_ port: EventChannelPort) throws(EventChannelError) {
        let result: Result<(EventPortSignals, UInt32)?, EventChannelError> = hypervisor.state.withLock { state in
            guard let record = state.domains[domain] else { return .failure(.noSuchDomain(domain)) }
            switch record.ports[port.rawValue] {
            case nil: return .failure(.invalidPort(port))
            case .unbound: return .success(nil)
            case .interdomain(let remote, let remotePort):
                guard let target = state.domains[remote] else { return .success(nil) }
                return .success((target.signals, remotePort))
            }
        }
        // Signalled outside the hypervisor lock: the waiter resumes without contending for it.
        if let (target, remotePort) = try result.get() { target.signal(EventChannelPort(remotePort)) }
    }

    /// OCaml: `Eventchn.unbind`
    public func unbind(_ port: EventChannelPort) throws(EventChannelError) {
        let failure: EventChannelError? = hypervisor.state.withLock { state in
            guard let record = state.domains[domain] else { return .noSuchDomain(domain) }
            guard let entry = record.ports[port.rawValue] else { return .invalidPort(port) }
            state.domains[domain]?.ports[port.rawValue] = nil
            if case .interdomain(let remote, let remotePort) = entry,
                state.domains[remote]?.ports[remotePort] == .interdomain(remote: domain, remotePort: port.rawValue)
            {
                state.domains[remote]?.ports[remotePort] = .unbound(remote: domain)
            }
            return nil
        }
        if let failure { throw failure }
        signals.close(port)
    }

    /// OCaml: `Xen_os.Activations.after`
    public func notifications(_ port: EventChannelPort) -> EventNotifications { signals.notifications(port) }

    /// Whether `port` is bound in this domain and, if connected, to which remote domain and port. For tests.
    ///
    /// Not in OCaml (`EVTCHNOP_status` introspection).
    public func status(_ port: EventChannelPort) -> (remote: DomainID, remotePort: EventChannelPort?)? {
        hypervisor.state.withLock { state in
            switch state.domains[domain]?.ports[port.rawValue] {
            case nil: nil
            case .unbound(let remote): (remote, nil)
            case .interdomain(let remote, let remotePort): (remote, EventChannelPort(remotePort))
            }
        }
    }

    /// Whether a notification on `port` is pending, not yet consumed by an iterator. For tests.
    ///
    /// Not in OCaml (the shared-info pending bit).
    public func isPending(_ port: EventChannelPort) -> Bool { signals.isPending(port) }

    /// The number of tasks waiting for a notification on `port`. For tests.
    ///
    /// Not in OCaml.
    public func waitingCount(_ port: EventChannelPort) -> Int { signals.waitingCount(port) }

    private static func lowestFree(_ ports: [UInt32: SimulatedHypervisor.PortState], _ max: UInt32) -> UInt32? {
        var candidate: UInt32 = 1
        while candidate < max {
            if ports[candidate] == nil { return candidate }
            candidate += 1
        }
        return nil
    }
}
