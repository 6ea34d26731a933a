import BlockDevice
import BlockPairExample
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreServer

@Test func writeAndReadBack() async throws {
    let hypervisor = SimulatedHypervisor()
    let server = XenStoreServer()
    let guest = try hypervisor.createDomain(name: "guest")
    let device = MemoryBlockDevice(sizeSectors: 2048)  // 1 MiB
    let disk = try await SimulatedDisk.attach(device, to: guest, hypervisor: hypervisor, xenstore: server)
    #expect(disk.front.deviceInfo == device.deviceInfo)  // known without asking: 2048 sectors of 512 bytes

    let data = PageBuffer(copying: (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7) })  // sectors 8 to 23
    try await disk.front.write(at: 8, from: [data])
    let readBack = PageBuffer(pages: 2)
    try await disk.front.read(at: 8, into: [readBack])
    #expect(readBack.contentsEqual(data))
    #expect(!hypervisor.grants(of: guest.id).isEmpty)  // the frontend's ring, while connected
    try await disk.detach()

    // The bytes are on dom0's disk, and nothing is left shared or mapped.
    let onDisk = PageBuffer(pages: 2)
    try await device.read(at: 8, into: [onDisk])
    #expect(onDisk.contentsEqual(data))
    #expect(hypervisor.grants(of: guest.id).isEmpty)  // every grant revoked
    #expect(hypervisor.memoryRecords(of: hypervisor.dom0.id).allSatisfy { $0.released })  // every mapping gone
    #expect(hypervisor.memoryRecords(of: guest.id).allSatisfy { $0.released })
}
