import ConsoleBackend
import SimulatedHypervisor
import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// A console session joins its tasks and lets go of the ring before unmapping it; the frontend before
/// unsharing it. On the simulator a released ring is fenced: a stale pointer to it traps.
@Suite struct ConsoleLifetimeTests {
    /// Connects an extra console, moves bytes both ways, closes both ends; returns the rig and the guest.
    static func exercise() async throws -> (ConsoleRig, ConsoleRig.Guest) {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let (frontend, session) = try await rig.connectExtraConsole(guest)
        try await frontend.write(Array("hello\n".utf8))
        var seen: [UInt8] = []
        while seen.count < 6 { seen += try await session.connection.read() }
        try await session.write(Array("typed\n".utf8))
        var typed: [UInt8] = []
        while typed.count < 6 { typed += try await frontend.read() }
        #expect(seen == Array("hello\n".utf8) && typed == Array("typed\n".utf8))
        let failure = await session.close()
        #expect(failure == nil)
        #expect(session.connection.page == nil)
        await frontend.close()
        return (rig, guest)
    }

    @Test func bothEndsReleaseTheRing() async throws {
        let (rig, guest) = try await Self.exercise()
        let back = rig.hypervisor.memoryRecords(of: rig.hypervisor.dom0.id)
        let front = rig.hypervisor.memoryRecords(of: guest.id)
        #expect(back.contains { $0.kind == .mapping } && back.allSatisfy { $0.released })
        #expect(front.contains { $0.kind == .share } && front.allSatisfy { $0.released })
        #expect(rig.hypervisor.grants(of: guest.id).isEmpty)
    }

    @Test func aStaleBackendRingPointerTraps() async {
        await #expect(processExitsWith: .signal(SIGSEGV)) {
            let (rig, _) = try await Self.exercise()
            let ring = rig.hypervisor.memoryRecords(of: rig.hypervisor.dom0.id).first { $0.kind == .mapping }
            guard let ring, ring.released, let address = UnsafeMutableRawPointer(bitPattern: ring.address) else {
                fatalError("no released ring mapping recorded")  // a trap, but not the SIGSEGV expected
            }
            // The backend's out_cons store, late.
            address.storeBytes(of: 0, toByteOffset: ConsoleRingLayout.outConsOffset, as: UInt32.self)
        }
    }

    @Test func aStaleFrontendRingPointerTraps() async {
        await #expect(processExitsWith: .signal(SIGSEGV)) {
            let (rig, guest) = try await Self.exercise()
            let ring = rig.hypervisor.memoryRecords(of: guest.id).first { $0.kind == .share }
            guard let ring, ring.released, let address = UnsafeMutableRawPointer(bitPattern: ring.address) else {
                fatalError("no released share recorded")  // a trap, but not the SIGSEGV expected
            }
            _ = address.load(fromByteOffset: ConsoleRingLayout.inProdOffset, as: UInt32.self)
        }
    }
}
