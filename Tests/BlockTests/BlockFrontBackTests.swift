import BlockBack
import BlockDevice
import BlockFront
import Synchronization
import Testing
import XenCore
import Xenbus

/// BlockFront and BlockBack over the simulated hypervisor: data paths, negotiation, errors, disconnect.
@Suite struct BlockFrontBackTests {
    static func pattern(_ count: Int, seed: UInt64) -> PageBuffer {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        let buffer = PageBuffer(pages: max(1, (count + 4095) / 4096)).slice(from: 0, count: count)
        // Word by word (every size here is a whole number of sectors): the tests fill tens of MiB in debug builds.
        let words = buffer.pointer.bindMemory(to: UInt64.self, capacity: count / 8)
        for index in 0..<count / 8 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            words[index] = state
        }
        return buffer
    }

    @Test func handshakeReachesConnectedAndCloses() async throws {
        let harness = try BlockHarness()
        let device = MemoryBlockDevice(sizeSectors: 2048)
        let back = try await harness.startBackend(device)
        let front = try await harness.connectFront("xvda")
        #expect(await front.info() == BlockDeviceInfo(readWrite: true, sectorSize: 512, sizeSectors: 2048))
        #expect(try await harness.store.state(of: harness.nodes.frontendPath) == .connected)
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .connected)
        let negotiated = front.negotiated
        #expect(negotiated.ringPages == 16 && negotiated.queues == 1 && negotiated.persistentGrants)
        #expect(negotiated.segmentsPerRequest == 256)
        #expect(negotiated.backend.flush && negotiated.backend.barrier && negotiated.backend.discard)
        #expect(try await harness.store.read(harness.nodes.frontendPath + "/ring-page-order") == "4")
        #expect(try await harness.store.read(harness.nodes.frontendPath + "/protocol") == "x86_64-abi")
        let freeBefore = harness.frontDomain.grantTable.refs.freeCount
        await front.disconnect()
        try await back.value
        #expect(try await harness.store.state(of: harness.nodes.frontendPath) == .closed)
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .closed)
        // Ring and persistent grants all returned.
        #expect(harness.frontDomain.grantTable.refs.freeCount > freeBefore)
        #expect(harness.frontDomain.grantTable.refs.freeCount == harness.frontDomain.grantTable.refs.capacity)
        await #expect(throws: BlockError.disconnected) { try await front.read(at: 0, into: [PageBuffer(pages: 1)]) }
    }

    @Test(arguments: ["51712", "xvda", "/dev/xvda"])
    func connectByIdOrName(name: String) async throws {
        let harness = try BlockHarness()
        let back = try await harness.startBackend(MemoryBlockDevice(sizeSectors: 64))
        let front = try await harness.connectFront(name)
        #expect(front.handle == 51712)
        await front.disconnect()
        try await back.value
    }

    @Test func unknownDeviceNamesAreTypedErrors() async throws {
        let harness = try BlockHarness()
        await #expect(throws: BlockFrontError.self) { _ = try await harness.connectFront("floppy0") }
        await #expect(throws: BlockFrontError.self) { _ = try await harness.connectFront("xvdb") }
    }

    /// Buffers of any sector multiple, split across direct and indirect requests, land where they should.
    @Test func buffersOfAnySectorMultiple() async throws {
        let harness = try BlockHarness()
        let device = MemoryBlockDevice(sizeSectors: 8192)
        let back = try await harness.startBackend(device)
        let front = try await harness.connectFront()
        let sizes = [512, 1536, 4096, 4608, 11 * 4096, 12 * 4096 + 512, 256 * 4096, 300 * 4096 + 1024]
        var sector: UInt64 = 1
        for (index, size) in sizes.enumerated() {
            let data = Self.pattern(size, seed: UInt64(index))
            let pieces = [data.slice(from: 0, count: 512), data.slice(from: 512, count: size - 512)].filter {
                $0.count > 0
            }
            try await front.write(at: sector, from: pieces)
            let direct = PageBuffer(pages: (size + 4095) / 4096).slice(from: 0, count: size)
            try await device.read(at: sector, into: [direct])
            #expect(direct.contentsEqual(data), "size \(size)")
            let back = PageBuffer(pages: (size + 4095) / 4096 + 1).slice(from: 512, count: size)
            try await front.read(at: sector, into: [back])
            #expect(back.contentsEqual(data), "size \(size)")
            sector += UInt64(size / 512) + 3
        }
        await #expect(throws: BlockError.self) { try await front.read(at: 8191, into: [PageBuffer(pages: 1)]) }
        await #expect(throws: BlockError.self) {
            try await front.read(at: 0, into: [PageBuffer(pages: 1).slice(from: 0, count: 100)])
        }
        await front.disconnect()
        try await back.value
    }

    /// 16 tasks, 10,240 random writes then reads, each verified by checksum against a model.
    @Test func concurrentRandomWritesThenReads() async throws {
        let harness = try BlockHarness()
        let regionSectors: UInt64 = 512
        let device = MemoryBlockDevice(sizeSectors: regionSectors * 16)
        let back = try await harness.startBackend(device)
        let front = try await harness.connectFront(
            options: BlockFrontOptions(domain: harness.frontDomain.id, queues: 2))
        let mismatches = await withTaskGroup(of: Int.self) { group in
            for task in 0..<16 {
                group.addTask {
                    var model = [UInt8](repeating: 0, count: Int(regionSectors) * 512)
                    var generator = SplitMix64(seed: UInt64(task))
                    let base = UInt64(task) * regionSectors
                    var bad = 0
                    for op in 0..<640 {
                        let count = Int(generator.next() % 16) + 1
                        let start = generator.next() % (regionSectors - UInt64(count))
                        if op % 2 == 0 {
                            let data = Self.pattern(count * 512, seed: generator.next())
                            do { try await front.write(at: base + start, from: [data]) } catch { bad += 1 }
                            model.replaceSubrange(Int(start) * 512..<(Int(start) + count) * 512, with: data.bytes)
                        } else {
                            let buffer = PageBuffer(pages: 4).slice(from: 0, count: count * 512)
                            do { try await front.read(at: base + start, into: [buffer]) } catch { bad += 1 }
                            if fnv(buffer.bytes) != fnv(Array(model[Int(start) * 512..<(Int(start) + count) * 512])) {
                                bad += 1
                            }
                        }
                    }
                    let all = PageBuffer(pages: Int(regionSectors) / 8)
                    do { try await front.read(at: base, into: [all]) } catch { bad += 1 }
                    if fnv(all.bytes) != fnv(model) { bad += 1 }
                    return bad
                }
            }
            return await group.reduce(0, +)
        }
        #expect(mismatches == 0)
        await front.disconnect()
        try await back.value
    }

    @Test(arguments: [512, 4096])
    func sectorSizes(sectorSize: Int) async throws {
        let harness = try BlockHarness()
        let device = MemoryBlockDevice(sizeSectors: 256, sectorSize: sectorSize)
        let back = try await harness.startBackend(device)
        let front = try await harness.connectFront()
        #expect(await front.info() == BlockDeviceInfo(readWrite: true, sectorSize: sectorSize, sizeSectors: 256))
        // `sectors` is always in 512-byte units (the Xen 4.20 rule).
        #expect(try await harness.store.read(harness.nodes.backendPath + "/sectors") == String(256 * sectorSize / 512))
        let data = Self.pattern(3 * sectorSize, seed: 9)
        try await front.write(at: 5, from: [data])
        let direct = PageBuffer(pages: 3).slice(from: 0, count: 3 * sectorSize)
        try await device.read(at: 5, into: [direct])
        #expect(direct.contentsEqual(data))
        let back2 = PageBuffer(pages: 3).slice(from: 0, count: 3 * sectorSize)
        try await front.read(at: 5, into: [back2])
        #expect(back2.contentsEqual(data))
        try await front.discard(at: 6, count: 1)
        try await front.read(at: 5, into: [back2])
        #expect(back2.slice(from: sectorSize, count: sectorSize).bytes.allSatisfy { $0 == 0 })
        await #expect(throws: BlockError.self) {
            try await front.write(at: 0, from: [PageBuffer(pages: 1).slice(from: 0, count: sectorSize / 2)])
        }
        await front.disconnect()
        try await back.value
    }

    @Test func readOnlyDevice() async throws {
        let harness = try BlockHarness(writable: false)
        let device = MemoryBlockDevice(sizeSectors: 64, readWrite: false)
        let back = try await harness.startBackend(device)
        let front = try await harness.connectFront()
        #expect(await front.info().readWrite == false)
        await #expect(throws: BlockError.isReadOnly) { try await front.write(at: 0, from: [PageBuffer(pages: 1)]) }
        await #expect(throws: BlockError.isReadOnly) { try await front.discard(at: 0, count: 1) }
        try await front.read(at: 0, into: [PageBuffer(pages: 1)])
        await front.disconnect()
        try await back.value
    }

    @Test func flushBarrierAndDiscard() async throws {
        let harness = try BlockHarness()
        let device = CountingDevice(MemoryBlockDevice(sizeSectors: 64))
        let back = try await harness.startBackend(device)
        let front = try await harness.connectFront()
        try await front.flush()
        #expect(device.flushes == 1)
        let data = Self.pattern(4096, seed: 3)
        try await front.writeBarrier(at: 8, from: [data])
        #expect(device.flushes == 3)
        try await front.discard(at: 8, count: 4)
        let back2 = PageBuffer(pages: 1)
        try await front.read(at: 8, into: [back2])
        #expect(back2.slice(from: 0, count: 2048).bytes.allSatisfy { $0 == 0 })
        #expect(back2.slice(from: 2048, count: 2048).contentsEqual(data.slice(from: 2048, count: 2048)))
        await front.disconnect()
        try await back.value
    }

    /// Every request in flight when the application disconnects fails with `.disconnected`.
    @Test func disconnectWithRequestsInFlight() async throws {
        let harness = try BlockHarness()
        let device = GatedDevice(MemoryBlockDevice(sizeSectors: 1024))
        let back = try await harness.startBackend(device)
        let front = try await harness.connectFront()
        let reads = (0..<8).map { index in
            Task { () -> BlockError? in
                do throws(BlockError) {
                    try await front.read(at: UInt64(index * 8), into: [PageBuffer(pages: 1)])
                    return nil
                } catch { return error }
            }
        }
        await device.waitForArrivals(8)
        let closing = Task { await front.disconnect() }
        for read in reads { #expect(await read.value == .disconnected) }
        device.open()
        await closing.value
        try await back.value
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .closed)
    }
}

/// FNV-1a, the checksum of the stress test.
func fnv(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
    return hash
}

/// The toolstack helper's nodes and permissions, checked through the guest's own xenstore connection.
@Suite struct VirtualBlockDeviceNodesTests {
    @Test func createSetsOwnersAndDestroyRemoves() async throws {
        let harness = try BlockHarness()
        let nodes = harness.nodes
        try await nodes.create(in: harness.store)
        // The guest reads the backend's keys and writes its own, but cannot write the backend's.
        #expect(try await harness.frontStore.read(nodes.backendPath + "/mode") == "w")
        #expect(try await harness.frontStore.read(nodes.frontendPath + "/backend") == nodes.backendPath)
        try await harness.frontStore.write(nodes.frontendPath + "/state", "3")
        await #expect(throws: (any Error).self) {
            try await harness.frontStore.write(nodes.backendPath + "/state", "4")
        }
        try await nodes.destroy(in: harness.store)
        #expect(try await harness.store.read(nodes.frontendPath + "/state") == nil)
        #expect(try await harness.store.read(nodes.backendPath + "/state") == nil)
    }
}
