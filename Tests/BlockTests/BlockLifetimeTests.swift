import BlockBack
import BlockDevice
import BlockFront
import SimulatedHypervisor
import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// Both block ends release everything they mapped, shared or allocated once they are done, and only then:
/// on the simulator every released range is fenced, so a stale pointer into a ring or a data page traps.
@Suite struct BlockLifetimeTests {
    /// Runs writes and reads through a front/back pair (persistent grants or not), disconnects, and returns
    /// the harness with both ends finished.
    static func exercise(persistent: Bool, gntshr: Bool) async throws -> BlockHarness {
        let harness = try BlockHarness()
        let disk = MemoryBlockDevice(sizeSectors: 4096)
        var backOptions = BlockBackOptions(domain: harness.backDomain.id)
        backOptions.persistentGrants = persistent
        let back = try await harness.startBackend(disk, options: backOptions)
        var frontOptions = BlockFrontOptions(domain: harness.frontDomain.id)
        frontOptions.persistentGrants = persistent
        if gntshr { frontOptions.gntshr = harness.frontDomain.openGntshr() }
        let front = try await harness.connectFront(options: frontOptions)
        let data = PageBuffer(pages: 80)
        for index in 0..<data.count { data.setUInt8(UInt8(truncatingIfNeeded: index &* 7), at: index) }
        try await front.write(at: 8, from: [data])
        let back1 = PageBuffer(pages: 80)
        try await front.read(at: 8, into: [back1])
        #expect(back1.contentsEqual(data))
        await front.disconnect()
        try await back.value
        return harness
    }

    @Test(arguments: [(false, false), (true, false), (true, true)])
    func everyRangeIsReleasedAfterDisconnect(persistent: Bool, gntshr: Bool) async throws {
        let harness = try await Self.exercise(persistent: persistent, gntshr: gntshr)
        let backRanges = harness.hypervisor.memoryRecords(of: harness.backDomain.id)
        let frontRanges = harness.hypervisor.memoryRecords(of: harness.frontDomain.id)
        #expect(backRanges.contains { $0.kind == .mapping })
        #expect(backRanges.filter { !$0.released }.isEmpty, "backend still maps \(backRanges.filter { !$0.released })")
        #expect(frontRanges.contains { $0.kind == (gntshr ? .share : .allocation) })
        #expect(
            frontRanges.filter { !$0.released && $0.kind == .share }.isEmpty,
            "frontend still shares \(frontRanges.filter { !$0.released })")
        #expect(harness.hypervisor.grants(of: harness.frontDomain.id).values.allSatisfy { $0 == 0 })
    }

    @Test func aStaleBackendRingPointerTraps() async {
        await #expect(processExitsWith: .signal(SIGSEGV)) {
            let harness = try await Self.exercise(persistent: true, gntshr: false)
            let ring = harness.hypervisor.memoryRecords(of: harness.backDomain.id).first { $0.kind == .mapping }
            guard let ring, ring.released, let address = UnsafeMutableRawPointer(bitPattern: ring.address) else {
                fatalError("no released ring mapping recorded")  // a trap, but not the SIGSEGV expected
            }
            address.storeBytes(of: 1, toByteOffset: 8, as: UInt32.self)
        }
    }

    @Test func aStaleFrontendSharePointerTraps() async {
        await #expect(processExitsWith: .signal(SIGSEGV)) {
            let harness = try await Self.exercise(persistent: true, gntshr: true)
            let share = harness.hypervisor.memoryRecords(of: harness.frontDomain.id).last { $0.kind == .share }
            guard let share, share.released, let address = UnsafeMutableRawPointer(bitPattern: share.address) else {
                fatalError("no released share recorded")  // a trap, but not the SIGSEGV expected
            }
            _ = address.load(as: UInt64.self)
        }
    }
}
