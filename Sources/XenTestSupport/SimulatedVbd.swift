public import BlockBack
public import BlockDevice
public import BlockFront
import SimulatedHypervisor
import XenCore
import Xenbus

/// One virtual block device between dom0 and a guest of a ``SimulatedHost``: the toolstack's xenstore nodes,
/// `BlockBack` serving a device in dom0 and `BlockFront` connecting in the guest, on the simulated grant
/// tables and event channels.
///
/// ```swift
/// let host = SimulatedHost()
/// let vbd = try SimulatedVbd(host: host)
/// let serving = try await vbd.serve(MemoryBlockDevice(sizeSectors: 2048))
/// let front = try await vbd.connectFront()
/// ```
public struct SimulatedVbd: Sendable {
    /// The host both ends live on.
    public let host: SimulatedHost
    /// The frontend's domain (the backend is dom0).
    public let guest: SimulatedGuest
    /// The vbd's xenstore nodes (frontend and backend directories).
    public let nodes: VirtualBlockDeviceNodes

    /// A vbd `deviceID` (51712 is xvda) for a new bare guest of `host` (``SimulatedHost/createGuest(name:)``),
    /// read-only unless `writable`, served by backends of `backendClass`.
    public init(
        host: SimulatedHost, deviceID: UInt32 = 51712, writable: Bool = true, backendClass: String = "vbd"
    ) throws {
        let guest = try host.createGuest()
        self.init(host: host, guest: guest, deviceID: deviceID, writable: writable, backendClass: backendClass)
    }

    /// A vbd `deviceID` for `guest` of `host`.
    public init(
        host: SimulatedHost, guest: SimulatedGuest, deviceID: UInt32 = 51712, writable: Bool = true,
        backendClass: String = "vbd"
    ) {
        self.host = host
        self.guest = guest
        nodes = VirtualBlockDeviceNodes(
            backendDomain: .dom0, frontendDomain: guest.id, deviceID: deviceID, writable: writable,
            backendClass: backendClass)
    }

    /// Creates the vbd's nodes (as the toolstack does) and starts `BlockBack` in dom0 serving `device`
    /// with `options` (default: every feature, dom0's identity). The task ends when the frontend closes or
    /// the device is taken away, and throws what `BlockBack.serve` throws.
    public func serve(
        _ device: any BlockDevice, options: BlockBackOptions? = nil
    ) async throws -> Task<Void, any Error> {
        try await nodes.create(in: host.dom0Bus)
        let store = host.dom0Bus
        let path = nodes.backendPath
        let dom0 = host.dom0Domain
        let options = options ?? BlockBackOptions(domain: dom0.id)
        return Task {
            try await BlockBack.serve(
                device, backendPath: path, store: store, grants: dom0.grantTable, events: dom0.eventChannel,
                options: options)
        }
    }

    /// Connects `BlockFront` in the guest to the vbd named `name` (`xvda`, or the device ID's digits).
    public func connectFront(_ name: String = "xvda", options: BlockFrontOptions? = nil) async throws -> BlockFront {
        try await BlockFront.connect(
            name, store: guest.bus, grants: guest.domain.grantTable, events: guest.domain.eventChannel,
            options: options ?? BlockFrontOptions(domain: guest.id))
    }
}
