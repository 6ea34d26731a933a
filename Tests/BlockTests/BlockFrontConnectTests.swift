import BlockBack
import BlockDevice
import BlockFront
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient
import Xenbus

/// `BlockFront.connect`'s own rules: one connection per device at a time, this domain's id from xenstore,
/// and xenstore failures that keep their `XenStoreError`.
@Suite struct BlockFrontConnectTests {
    /// The path of an `.alreadyConnected` error, or nil for anything else.
    static func refusedPath(_ error: BlockFrontError) -> String? {
        guard case .alreadyConnected(let path) = error else { return nil }
        return path
    }

    @Test func aSecondConnectIsRefusedUntilTheFirstDisconnects() async throws {
        let harness = try BlockHarness()
        try await harness.nodes.create(in: harness.store)
        let backend = BlockReconnectTests.serveWhileOnline(harness, MemoryBlockDevice(sizeSectors: 2048))
        let front = try await harness.connectFront()
        let frontendPath = harness.nodes.frontendPath

        // Through the same connection: refused by the process's claim.
        let again = await #expect(throws: BlockFrontError.self) { _ = try await harness.connectFront("51712") }
        #expect(again.flatMap(Self.refusedPath) == frontendPath)
        // Through another connection to the same xenstore: refused because the frontend is Connected there.
        let otherStore = XenStoreBus(
            client: XenStoreClient(transport: harness.server.connect(domain: harness.frontDomain.id)))
        let other = await #expect(throws: BlockFrontError.self) {
            _ = try await BlockFront.connect(
                "xvda", store: otherStore, grants: harness.frontDomain.grantTable,
                events: harness.frontDomain.eventChannel, options: BlockFrontOptions(domain: harness.frontDomain.id))
        }
        #expect(other.flatMap(Self.refusedPath) == frontendPath)

        // The refusals left the first connection alone.
        #expect(try await BlockHarness.writeAndReadBack(front, at: 8, byte: 0x5a))
        await front.disconnect()

        // Released on disconnect: the same device connects again (by its number, as the toolstack names it).
        let second = try await BlockFront.connect(
            harness.nodes.deviceID, store: harness.frontStore, grants: harness.frontDomain.grantTable,
            events: harness.frontDomain.eventChannel, options: BlockFrontOptions(domain: harness.frontDomain.id))
        let reread = PageBuffer(pages: 1)
        try await second.read(at: 8, into: [reread])
        #expect(reread.bytes.allSatisfy { $0 == 0x5a })  // what the first connection wrote
        await second.disconnect()
        await otherStore.client.close()
        try await harness.nodes.detach(in: harness.store)
        #expect(try await backend.value == 3)
    }

    @Test func aFailingXenstoreReadKeepsItsXenStoreError() async throws {
        let harness = try BlockHarness()
        try await harness.nodes.create(in: harness.store)
        let client = XenStoreClient(transport: harness.server.connect(domain: harness.frontDomain.id))
        await client.close()
        let error = await #expect(throws: BlockFrontError.self) {
            _ = try await BlockFront.connect(
                "xvda", store: XenStoreBus(client: client), grants: harness.frontDomain.grantTable,
                events: harness.frontDomain.eventChannel, options: BlockFrontOptions(domain: harness.frontDomain.id))
        }
        guard case .xenstore(let path, let underlying) = error else {
            Issue.record("expected .xenstore, got \(String(describing: error))")
            return
        }
        #expect(path == harness.nodes.frontendPath)
        #expect(underlying as? XenStoreError == .disconnected)
        #expect(error?.description == "xenstore \(harness.nodes.frontendPath): \(XenStoreError.disconnected)")
    }

    @Test func thisDomainsIDComesFromXenstoreWhenNotGiven() async throws {
        let harness = try BlockHarness()
        let guest = harness.frontDomain.id
        // The guest's home, as the toolstack makes it: owned by the guest.
        try await harness.store.write("/local/domain/\(guest)", "")
        try await harness.store.setPermissions("/local/domain/\(guest)", owner: guest, readers: [])
        // Without a `domid` node the frontend cannot tell where its directory is.
        let missing = await #expect(throws: BlockFrontError.self) {
            _ = try await harness.connectFront(options: BlockFrontOptions())
        }
        guard case .badKey(.missing(key: "domid"), _) = missing else {
            Issue.record("expected a missing domid, got \(String(describing: missing))")
            return
        }
        // What xen-init-dom0 and libxl write for every domain (readable by it, as its home is).
        try await harness.store.write("/local/domain/\(guest)/domid", "\(guest.rawValue)")
        let backend = try await harness.startBackend(MemoryBlockDevice(sizeSectors: 2048))
        let front = try await harness.connectFront(options: BlockFrontOptions())
        #expect(front.frontendPath == harness.nodes.frontendPath)
        #expect(front.deviceInfo.sizeSectors == 2048)
        await front.disconnect()
        try await backend.value
    }
}
