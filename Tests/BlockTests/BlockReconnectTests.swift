import BlockBack
import BlockDevice
import BlockFront
import SimulatedHypervisor
import Testing
import XenCore
import Xenbus

/// A backend that keeps serving its vbd across connections (a guest reloading its driver) and lets the
/// toolstack detach the device while a guest uses it.
@Suite struct BlockReconnectTests {
    /// Serves the vbd again after each close, until the toolstack takes it offline; returns how many times
    /// `serve` returned.
    static func serveWhileOnline(_ harness: BlockHarness, _ device: any BlockDevice) -> Task<Int, any Error> {
        let store = harness.store
        let nodes = harness.nodes
        let grants = harness.backDomain.grantTable
        let events = harness.backDomain.eventChannel
        let options = BlockBackOptions(domain: harness.backDomain.id)
        return Task {
            var served = 0
            while try await nodes.isOnline(in: store) {
                try await BlockBack.serve(
                    device, backendPath: nodes.backendPath, store: store, grants: grants, events: events,
                    options: options)
                served += 1
            }
            return served
        }
    }

    @Test func aFrontendReconnectsAfterItsDisconnect() async throws {
        let harness = try BlockHarness()
        let disk = MemoryBlockDevice(sizeSectors: 2048)
        try await harness.nodes.create(in: harness.store)
        let backend = Self.serveWhileOnline(harness, disk)
        for round in 0..<3 {
            let front = try await harness.connectFront()
            let data = PageBuffer(copying: [UInt8](repeating: UInt8(round + 1), count: 4096))
            try await front.write(at: UInt64(round * 8), from: [data])
            let back = PageBuffer(pages: 1)
            try await front.read(at: UInt64(round * 8), into: [back])
            #expect(back.contentsEqual(data))
            await front.disconnect()
            #expect(try await harness.store.state(of: harness.nodes.frontendPath) == .closed)
        }
        try await harness.nodes.detach(in: harness.store)
        // Three connections served, then a fourth serve ends without one: the toolstack detached the device.
        #expect(try await backend.value == 4)
        #expect(harness.hypervisor.memoryRecords(of: harness.backDomain.id).allSatisfy { $0.released })
    }

    @Test func theToolstackDetachesADeviceInUse() async throws {
        let harness = try BlockHarness()
        try await harness.nodes.create(in: harness.store)
        let backend = Self.serveWhileOnline(harness, MemoryBlockDevice(sizeSectors: 2048))
        let front = try await harness.connectFront()
        try await front.write(at: 0, from: [PageBuffer(pages: 1)])
        // libxl's remove: online 0, backend Closing; the backend closes and releases everything.
        let detaching = Task { try await harness.nodes.detach(in: harness.store) }
        #expect(try await backend.value == 1)
        // The guest's frontend is told by the backend's Closing: its requests now fail and it closes.
        await #expect(throws: BlockError.self) {
            for _ in 0..<100 {
                try await front.read(at: 0, into: [PageBuffer(pages: 1)])
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        await front.disconnect()
        try await detaching.value
        #expect(try await harness.store.read(harness.nodes.backendPath + "/state") == nil)
        #expect(harness.hypervisor.memoryRecords(of: harness.backDomain.id).allSatisfy { $0.released })
    }

    @Test func aBackendStartedBeforeItsFrontendHasAStateWaitsForIt() async throws {
        let harness = try BlockHarness()
        try await harness.nodes.create(in: harness.store)
        try await harness.store.remove(harness.nodes.frontendPath + "/state")
        let backend = Self.serveWhileOnline(harness, MemoryBlockDevice(sizeSectors: 2048))
        try await Task.sleep(for: .milliseconds(100))
        // The toolstack writes the frontend's nodes after starting the backend (the real-Xen BlockBack check).
        try await harness.store.write(harness.nodes.frontendPath + "/state", XenbusState.initialising.xenstoreValue)
        let front = try await harness.connectFront()
        try await front.write(at: 0, from: [PageBuffer(copying: [UInt8](repeating: 7, count: 4096))])
        await front.disconnect()
        try await harness.nodes.detach(in: harness.store)
        #expect(try await backend.value == 2)
    }

    @Test func theFrontendsDomainGoingAwayEndsTheServing() async throws {
        let harness = try BlockHarness()
        try await harness.nodes.create(in: harness.store)
        let backend = Self.serveWhileOnline(harness, MemoryBlockDevice(sizeSectors: 2048))
        let front = try await harness.connectFront()
        await front.disconnect()
        // `xl destroy`: the toolstack removes the guest's whole directory, the backend's stays (online 1).
        try await harness.store.remove("/local/domain/\(harness.frontDomain.id.rawValue)")
        #expect(try await backend.value == 2)
        #expect(harness.hypervisor.memoryRecords(of: harness.backDomain.id).allSatisfy { $0.released })
    }

    /// Linux's xenbus leaves a rebound blkfront (unbind + bind) in Closed, and blkfront reconnects from there
    /// only when it sees the backend Connected: once both sides closed, the backend offers the device again
    /// as Connected (features and device keys published), and serves the frontend that then connects.
    @Test func aClosedFrontendIsOfferedTheDeviceAgain() async throws {
        let harness = try BlockHarness()
        try await harness.nodes.create(in: harness.store)
        let backend = Self.serveWhileOnline(harness, MemoryBlockDevice(sizeSectors: 2048))
        let front = try await harness.connectFront()
        await front.disconnect()
        let store = harness.store
        let backendPath = harness.nodes.backendPath
        let offered = try await store.wait(watching: [backendPath + "/state"]) { () -> Bool? in
            try await store.state(of: backendPath) == .connected ? true : nil
        }
        #expect(offered)
        #expect(try await store.state(of: harness.nodes.frontendPath) == .closed)
        #expect(try await store.read(backendPath + "/sectors") == "2048")
        // Our frontend connects again (through Initialising) and its I/O is served.
        let again = try await harness.connectFront()
        let data = PageBuffer(copying: [UInt8](repeating: 9, count: 4096))
        try await again.write(at: 16, from: [data])
        let back = PageBuffer(pages: 1)
        try await again.read(at: 16, into: [back])
        #expect(back.contentsEqual(data))
        await again.disconnect()
        try await harness.nodes.detach(in: store)
        #expect(try await backend.value == 3)
    }
}
