import BlockBack
import BlockDevice
import BlockFront
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer

/// A guest's `BlockFront` on dom0's `BlockBack` serving a RAM disk: writes a sector and reads it back.
public func blockQuickstart(
    server: XenStoreServer, hypervisor: SimulatedHypervisor, guest: SimulatedDomain
) async throws -> PageBuffer {
    let dom0 = hypervisor.dom0
    let backStore = XenStoreBus(client: XenStoreClient(transport: server.connect(domain: .dom0)))
    let frontStore = XenStoreBus(client: XenStoreClient(transport: server.connect(domain: guest.id)))
    let nodes = VirtualBlockDeviceNodes(backendDomain: dom0.id, frontendDomain: guest.id, deviceID: 51712)
    try await nodes.create(in: backStore)  // the toolstack's part
    let serving = Task {
        try await BlockBack.serve(
            MemoryBlockDevice(sizeSectors: 2048), backendPath: nodes.backendPath, store: backStore,
            grants: dom0.grantTable, events: dom0.eventChannel, options: BlockBackOptions(domain: dom0.id))
    }
    let disk = try await BlockFront.connect(
        nodes.deviceID, store: frontStore, grants: guest.grantTable, events: guest.eventChannel,
        options: BlockFrontOptions(domain: guest.id))
    try await disk.write(at: 0, from: [PageBuffer(copying: [UInt8](repeating: 0x42, count: 4096))])
    let readBack = PageBuffer(pages: 1)
    try await disk.read(at: 0, into: [readBack])
    await disk.disconnect()
    try await serving.value
    return readBack
}
