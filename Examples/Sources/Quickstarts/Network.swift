import BlockFront  // XenStoreBus
import NetBack
import NetFront
import NetifProtocol  // MACAddress
import NetworkDevice
import SimulatedHypervisor
import XenCore
import XenStoreClient

/// A guest's `NetFront` sends one frame to dom0's `NetBack` (a hypervisor with `grantTableSize: 8192`).
public func networkQuickstart(
    hypervisor: SimulatedHypervisor, guest: SimulatedDomain, backStore: XenStoreBus, frontStore: XenStoreBus
) async throws -> NetworkFrame? {
    let dom0 = hypervisor.dom0
    let vif = VirtualInterfaceNodes(
        backendDomain: dom0.id, frontendDomain: guest.id, handle: 0, mac: MACAddress("00:16:3e:00:01:00")!)
    try await vif.create(in: backStore)
    let back = try await NetBack.open(
        backendPath: vif.backendPath, store: backStore, grants: dom0.grantTable, events: dom0.eventChannel,
        options: NetBackOptions(domain: dom0.id))
    let backServing = Task { try await back.serve() }
    let nic = try await NetFront.connect(
        "0", store: frontStore, grants: guest.grantTable, events: guest.eventChannel,
        options: NetFrontOptions(domain: guest.id))
    var frames = back.listen().makeAsyncIterator()
    try await nic.write(size: 60) { frame in
        back.mac.write(to: frame, at: 0); nic.mac.write(to: frame, at: 6); return 60
    }
    let received = await frames.next()  // the frame, on dom0's side
    await nic.disconnect()
    await back.disconnect()
    try await backServing.value
    return received
}
