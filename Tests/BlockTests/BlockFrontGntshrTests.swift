import BlockBack
import BlockDevice
import BlockFront
import GrantTable
import SimulatedHypervisor
import Testing
import XenCore
import Xenbus

/// The frontend's gntshr path (how a dom0 userspace frontend shares pages on real Xen) against BlockBack on the
/// simulated hypervisor. The frontend's grant table refuses `grantAccess` as `XenGrantTable` does, so every ring,
/// indirect and data page provably comes from `sharePages`.
@Suite struct BlockFrontGntshrTests {
    /// The simulated table with export refused, like the real userspace one.
    struct ExportlessGrantTable: GrantTableBackend {
        let inner: any GrantTableBackend
        var domain: DomainID { inner.domain }
        var refs: GrantRefPool { inner.refs }
        func grantAccess(_ ref: GrantRef, to domain: DomainID, writable: Bool, page: PageBuffer)
            throws(GrantTableError)
        { throw .unsupported(operation: "grant_access") }
        func endAccess(_ ref: GrantRef) throws(GrantTableError) { throw .unsupported(operation: "end_access") }
        func map(domain: DomainID, ref: GrantRef, writable: Bool) throws(GrantTableError) -> GrantMapping {
            try inner.map(domain: domain, ref: ref, writable: writable)
        }
        func mapv(domain: DomainID, refs: [GrantRef], writable: Bool) throws(GrantTableError) -> GrantMapping {
            try inner.mapv(domain: domain, refs: refs, writable: writable)
        }
    }

    static func connect(_ harness: BlockHarness, queues: Int = 1, persistent: Bool = true) async throws -> BlockFront {
        try await BlockFront.connect(
            "xvda", store: harness.frontStore, grants: ExportlessGrantTable(inner: harness.frontDomain.grantTable),
            events: harness.frontDomain.eventChannel,
            options: BlockFrontOptions(
                domain: harness.frontDomain.id, queues: queues, persistentGrants: persistent,
                gntshr: harness.frontDomain.openGntshr()))
    }

    /// Handshake, direct and indirect transfers checked against the disk, flush, discard, disconnect; every
    /// shared page is given back afterwards.
    @Test(arguments: [true, false])
    func dataPathOverSharedPages(persistent: Bool) async throws {
        let harness = try BlockHarness()
        let device = MemoryBlockDevice(sizeSectors: 8192)
        let back = try await harness.startBackend(device)
        let front = try await Self.connect(harness, persistent: persistent)
        #expect(front.negotiated.ringPages == 16 && front.negotiated.segmentsPerRequest == 256)
        #expect(front.negotiated.persistentGrants == persistent)
        #expect(try await harness.store.state(of: harness.nodes.backendPath) == .connected)
        let pool = harness.frontDomain.grantTable.refs
        #expect(pool.freeCount < pool.capacity)  // the shared ring holds references
        var sector: UInt64 = 1
        for (index, size) in [512, 4096, 11 * 4096, 12 * 4096 + 512, 256 * 4096, 300 * 4096 + 1024].enumerated() {
            let data = BlockFrontBackTests.pattern(size, seed: UInt64(index) + 40)
            try await front.write(at: sector, from: [data])
            let onDisk = PageBuffer(pages: (size + 4095) / 4096).slice(from: 0, count: size)
            try await device.read(at: sector, into: [onDisk])
            #expect(onDisk.contentsEqual(data), "size \(size)")
            let readBack = PageBuffer(pages: (size + 4095) / 4096 + 1).slice(from: 512, count: size)
            try await front.read(at: sector, into: [readBack])
            #expect(fnv(readBack.bytes) == fnv(data.bytes), "size \(size)")
            sector += UInt64(size / 512) + 3
        }
        try await front.flush()
        try await front.discard(at: 1, count: 1)
        let first = PageBuffer(pages: 1).slice(from: 0, count: 512)
        try await front.read(at: 1, into: [first])
        #expect(first.bytes.allSatisfy { $0 == 0 })
        await front.disconnect()
        try await back.value
        #expect(try await harness.store.state(of: harness.nodes.frontendPath) == .closed)
        #expect(pool.freeCount == pool.capacity)
    }

    /// Many tasks on two queues share one pool of shared pages; every read matches a model by checksum.
    @Test func concurrentRequestsOnTwoQueues() async throws {
        let harness = try BlockHarness()
        let regionSectors: UInt64 = 256
        let device = MemoryBlockDevice(sizeSectors: regionSectors * 8)
        let back = try await harness.startBackend(device)
        let front = try await Self.connect(harness, queues: 2)
        let mismatches = await withTaskGroup(of: Int.self) { group in
            for task in 0..<8 {
                group.addTask {
                    var model = [UInt8](repeating: 0, count: Int(regionSectors) * 512)
                    var generator = SplitMix64(seed: UInt64(task) + 100)
                    let base = UInt64(task) * regionSectors
                    var bad = 0
                    for op in 0..<200 {
                        let count = Int(generator.next() % 40) + 1
                        let start = generator.next() % (regionSectors - UInt64(count))
                        let range = Int(start) * 512..<(Int(start) + count) * 512
                        if op % 2 == 0 {
                            let data = BlockFrontBackTests.pattern(count * 512, seed: generator.next())
                            do { try await front.write(at: base + start, from: [data]) } catch { bad += 1 }
                            model.replaceSubrange(range, with: data.bytes)
                        } else {
                            let buffer = PageBuffer(pages: 5).slice(from: 0, count: count * 512)
                            do { try await front.read(at: base + start, into: [buffer]) } catch { bad += 1 }
                            if fnv(buffer.bytes) != fnv(Array(model[range])) { bad += 1 }
                        }
                    }
                    return bad
                }
            }
            return await group.reduce(0, +)
        }
        #expect(mismatches == 0)
        await front.disconnect()
        try await back.value
        #expect(harness.frontDomain.grantTable.refs.freeCount == harness.frontDomain.grantTable.refs.capacity)
    }

    /// Without a gntshr option a table that cannot export makes the frontend open `/dev/xen/gntalloc` itself;
    /// where that is missing (no Xen here) connecting fails with a typed error and leaves no grant behind.
    @Test func exportlessTableWithoutGntshrFallsBackToGntalloc() async throws {
        let harness = try BlockHarness()
        let back = try await harness.startBackend(MemoryBlockDevice(sizeSectors: 64))
        let pool = harness.frontDomain.grantTable.refs
        let hasGntalloc = (try? XenGntshr()) != nil
        do {
            let front = try await BlockFront.connect(
                "xvda", store: harness.frontStore,
                grants: ExportlessGrantTable(inner: harness.frontDomain.grantTable),
                events: harness.frontDomain.eventChannel, options: BlockFrontOptions(domain: harness.frontDomain.id))
            await front.disconnect()
            #expect(hasGntalloc)
        } catch {
            #expect(!hasGntalloc)
            guard case .resources = error else {
                Issue.record("unexpected \(error)")
                return
            }
        }
        #expect(pool.freeCount == pool.capacity)
        back.cancel()
    }
}
