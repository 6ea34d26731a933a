import BlockBack
import BlockDevice
import BlockFront
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer
import Xenbus

/// A guest (frontend) and a driver domain (backend) on one simulated hypervisor, sharing a xenstore.
struct BlockHarness {
    let hypervisor: SimulatedHypervisor
    let server = XenStoreServer()
    /// The toolstack's and the backend's connection (dom0).
    let store: any XenbusStore
    /// The guest's connection: it may only touch what the vbd permissions allow.
    let frontStore: any XenbusStore
    let backDomain: SimulatedDomain
    let frontDomain: SimulatedDomain
    let nodes: VirtualBlockDeviceNodes

    init(writable: Bool = true, deviceID: UInt32 = 51712, grantTableSize: Int = 2048) throws {
        hypervisor = SimulatedHypervisor(grantTableSize: grantTableSize)
        backDomain = hypervisor.dom0
        frontDomain = try hypervisor.createDomain(name: "guest")
        store = XenStoreBus(client: XenStoreClient(transport: server.connect(domain: .dom0)))
        frontStore = XenStoreBus(client: XenStoreClient(transport: server.connect(domain: frontDomain.id)))
        nodes = VirtualBlockDeviceNodes(
            backendDomain: backDomain.id, frontendDomain: frontDomain.id, deviceID: deviceID, writable: writable)
    }

    /// Creates the vbd nodes and starts the backend serving `device`; the task ends when the frontend closes.
    func startBackend(_ device: any BlockDevice, options: BlockBackOptions? = nil) async throws -> Task<Void, any Error>
    {
        try await nodes.create(in: store)
        let store = store
        let path = nodes.backendPath
        let grants = backDomain.grantTable
        let events = backDomain.eventChannel
        let options = options ?? BlockBackOptions(domain: backDomain.id)
        return Task {
            try await BlockBack.serve(
                device, backendPath: path, store: store, grants: grants, events: events, options: options)
        }
    }

    func connectFront(_ id: String = "xvda", options: BlockFrontOptions? = nil) async throws -> BlockFront {
        try await BlockFront.connect(
            id, store: frontStore, grants: frontDomain.grantTable, events: frontDomain.eventChannel,
            options: options ?? BlockFrontOptions(domain: frontDomain.id))
    }

    /// Writes a page of `byte` at `sector` through `front` and reads it back: whether the bytes came back.
    static func writeAndReadBack(_ front: BlockFront, at sector: UInt64, byte: UInt8) async throws -> Bool {
        let data = PageBuffer(copying: [UInt8](repeating: byte, count: 4096))
        try await front.write(at: sector, from: [data])
        let back = PageBuffer(pages: 1)
        try await front.read(at: sector, into: [back])
        return back.contentsEqual(data)
    }
}
