import BlockBack
import BlockDevice
import BlockFront
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport
import Xenbus

/// A guest (frontend) and a driver domain (backend) on one simulated hypervisor, sharing a xenstore: the
/// package's ``SimulatedVbd`` fixture, under the names these tests use.
struct BlockHarness {
    let vbd: SimulatedVbd
    var hypervisor: SimulatedHypervisor { vbd.host.hypervisor }
    var server: XenStoreServer { vbd.host.xenstored }
    /// The toolstack's and the backend's connection (dom0).
    var store: any XenbusStore { vbd.host.dom0Bus }
    /// The guest's connection: it may only touch what the vbd permissions allow.
    var frontStore: any XenbusStore { vbd.guest.bus }
    var backDomain: SimulatedDomain { vbd.host.dom0Domain }
    var frontDomain: SimulatedDomain { vbd.guest.domain }
    var nodes: VirtualBlockDeviceNodes { vbd.nodes }

    init(writable: Bool = true, deviceID: UInt32 = 51712, grantTableSize: Int = 2048) throws {
        let host = SimulatedHost(hypervisor: SimulatedHypervisor(grantTableSize: grantTableSize))
        vbd = try SimulatedVbd(host: host, deviceID: deviceID, writable: writable)
    }

    /// Creates the vbd nodes and starts the backend serving `device`; the task ends when the frontend closes.
    func startBackend(_ device: any BlockDevice, options: BlockBackOptions? = nil) async throws -> Task<Void, any Error>
    {
        try await vbd.serve(device, options: options)
    }

    func connectFront(_ id: String = "xvda", options: BlockFrontOptions? = nil) async throws -> BlockFront {
        try await vbd.connectFront(id, options: options)
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
