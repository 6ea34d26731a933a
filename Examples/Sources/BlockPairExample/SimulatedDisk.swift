import BlockBack  // also BlockDevice, XenCore
import BlockFront  // also XenStoreClient
import SimulatedHypervisor
import XenStoreServer

/// A guest's virtual disk on the simulator: dom0's `BlockBack` serves `device`, the guest's `BlockFront`
/// uses it, and the two meet through the in-memory xenstored.
public struct SimulatedDisk: Sendable {
    /// The guest's end: read and write it as any `BlockDevice`.
    public let front: BlockFront
    private let serving: Task<Void, any Error>
    private let clients: [XenStoreClient]

    /// Does the toolstack's part (the vbd's xenstore directories), starts the backend in dom0 and connects
    /// the guest's frontend.
    public static func attach(
        _ device: any BlockDevice, to guest: SimulatedDomain, hypervisor: SimulatedHypervisor,
        xenstore server: XenStoreServer, deviceID: UInt32 = 51712
    ) async throws -> SimulatedDisk {
        let dom0 = hypervisor.dom0
        let backClient = XenStoreClient(transport: server.connect(domain: dom0.id))
        let frontClient = XenStoreClient(transport: server.connect(domain: guest.id))
        let backStore = XenStoreBus(client: backClient)
        let nodes = VirtualBlockDeviceNodes(backendDomain: dom0.id, frontendDomain: guest.id, deviceID: deviceID)
        try await nodes.create(in: backStore)

        let serving = Task {
            try await BlockBack.serve(
                device, backendPath: nodes.backendPath, store: backStore, grants: dom0.grantTable,
                events: dom0.eventChannel, options: BlockBackOptions(domain: dom0.id))
        }
        do {
            let front = try await BlockFront.connect(
                nodes.deviceID, store: XenStoreBus(client: frontClient), grants: guest.grantTable,
                events: guest.eventChannel, options: BlockFrontOptions(domain: guest.id))
            return SimulatedDisk(front: front, serving: serving, clients: [backClient, frontClient])
        } catch {
            serving.cancel()  // the backend stops waiting for a frontend
            _ = await serving.result
            throw error
        }
    }

    /// Disconnects the frontend (its requests finish first) and waits for the backend to release everything.
    public func detach() async throws {
        await front.disconnect()
        try await serving.value  // BlockBack returns once both ends closed
        for client in clients { await client.close() }
    }
}
