public import NetBack
public import NetFront
public import NetifProtocol
import SimulatedHypervisor
import XenCore

/// One virtual network interface between dom0 and a guest of a ``SimulatedHost``: the toolstack's xenstore
/// nodes, `NetBack` in dom0 and `NetFront` in the guest, on the simulated grant tables and event channels.
/// (Give the host's hypervisor a large grant table, e.g. 8192 entries: a vif grants many pages.)
public struct SimulatedVif: Sendable {
    /// The host both ends live on.
    public let host: SimulatedHost
    /// The frontend's domain (the backend is dom0).
    public let guest: SimulatedGuest
    /// The vif's xenstore nodes.
    public let nodes: VirtualInterfaceNodes

    /// Vif `handle` of `guest` with `mac` (and `mtu`, if given).
    public init(host: SimulatedHost, guest: SimulatedGuest, handle: UInt32 = 0, mac: MACAddress, mtu: Int? = nil) {
        self.host = host
        self.guest = guest
        nodes = VirtualInterfaceNodes(
            backendDomain: .dom0, frontendDomain: guest.id, handle: handle, mac: mac, mtu: mtu)
    }

    /// Writes the vif's nodes (as the toolstack does), opens `NetBack` in dom0 with the options `configure`
    /// sets (from dom0's defaults) and starts serving it: the backend and its serving task.
    public func startBackend(
        _ configure: (inout NetBackOptions) -> Void = { _ in }
    ) async throws -> (NetBack, Task<Void, any Error>) {
        try await nodes.create(in: host.dom0Bus)
        var options = NetBackOptions(domain: .dom0)
        configure(&options)
        let dom0 = host.dom0Domain
        let back = try await NetBack.open(
            backendPath: nodes.backendPath, store: host.dom0Bus, grants: dom0.grantTable, events: dom0.eventChannel,
            options: options)
        return (back, Task { try await back.serve() })
    }

    /// Connects `NetFront` in the guest with the options `configure` sets (from the guest's defaults).
    public func connectFront(_ configure: (inout NetFrontOptions) -> Void = { _ in }) async throws -> NetFront {
        var options = NetFrontOptions(domain: guest.id)
        configure(&options)
        return try await NetFront.connect(
            String(nodes.handle), store: guest.bus, grants: guest.domain.grantTable,
            events: guest.domain.eventChannel, options: options)
    }
}
