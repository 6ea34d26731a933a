import BlockDevice
import BlockFront
import DriverDomainMetricsExample
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient
import XenStoreServer

/// The value of the series `name` of vbd `deviceID` with `op` in `text`, nil when there is none.
func sample(_ text: String, _ name: String, deviceID: UInt32, op: String? = nil) -> String? {
    let labels = ["device=\"\(deviceID)\""] + (op.map { ["op=\"\($0)\""] } ?? [])
    let line = text.split(separator: "\n").first { line in
        line.hasPrefix(name + "{") && labels.allSatisfy { line.contains($0) }
    }
    return line?.split(separator: " ").last.map(String.init)
}

@Test func blockCountersAfterSomeIO() async throws {
    let hypervisor = SimulatedHypervisor()
    let server = XenStoreServer()
    let guest = try hypervisor.createDomain(name: "guest")
    let deviceID: UInt32 = 51776  // xvde: no other example test serves it into this process's registry
    let serving = try await DriverDomainMetrics.serve(
        MemoryBlockDevice(sizeSectors: 2048), to: guest.id, deviceID: deviceID, from: hypervisor.dom0,
        xenstore: server)
    let guestStore = XenStoreClient(transport: server.connect(domain: guest.id))
    let front = try await BlockFront.connect(
        String(deviceID), store: XenStoreBus(client: guestStore), grants: guest.grantTable,
        events: guest.eventChannel, options: BlockFrontOptions(domain: guest.id))
    let data = PageBuffer(pages: 2)
    try await front.write(at: 0, from: [data])
    try await front.read(at: 0, into: [data])
    try await front.read(at: 16, into: [data])
    await front.disconnect()
    try await serving.value
    await guestStore.close()

    let text = DriverDomainMetrics.exposition()
    #expect(text.contains("# TYPE swiftxen_block_requests_total counter"))
    #expect(text.contains("# TYPE swiftxen_block_requests_in_flight gauge"))
    #expect(sample(text, "swiftxen_block_requests_total", deviceID: deviceID, op: "read") == "2")
    #expect(sample(text, "swiftxen_block_requests_total", deviceID: deviceID, op: "write") == "1")
    #expect(sample(text, "swiftxen_block_bytes_total", deviceID: deviceID, op: "read") == "16384")
    #expect(sample(text, "swiftxen_block_bytes_total", deviceID: deviceID, op: "write") == "8192")
    #expect(sample(text, "swiftxen_block_errors_total", deviceID: deviceID, op: "read") == "0")
    #expect(sample(text, "swiftxen_block_connections_total", deviceID: deviceID) == "1")
    #expect(sample(text, "swiftxen_block_requests_in_flight", deviceID: deviceID) == "0.0")
}
