import EventChannel
import GrantTable
import SimulatedHypervisor
import Testing
import Vchan
import XenCore

/// Servers that publish nonsense: the client refuses with a typed error and leaves nothing mapped or bound.
@Suite struct VchanHostileServerTests {
    struct Setup {
        let rig = VchanRig()
        let server: SimulatedDomain
        let client: SimulatedDomain
        let raw: RawServer

        init() async throws {
            server = try await rig.makeDomain()
            client = try await rig.makeDomain()
            raw = try RawServer(domain: server, client: client.id)
            VchanControlPage.initialiseServerPage(
                raw.page, sizes: try VchanRingSizes.server(readMinimum: 0, writeMinimum: 0), grants: [])
        }

        func connect(_ port: String = "evil") async throws(VchanError) -> VchanConnection {
            try await VchanClient.connect(
                domain: server.id, port: try VchanPort(port), environment: rig.environment(client),
                options: VchanOptions(connectTimeout: .seconds(5)))
        }

        /// Nothing of the client is left: no mapping of the page, no bound port. A client that had mapped
        /// the page left `cli_live` at 0 through its unmap notification, as libxenvchan's does.
        func expectNothingLeft(mapped: Bool = true) {
            #expect(rig.hypervisor.grantMappingCount(granter: server.id, ref: raw.share.refs[0]) == 0)
            #expect(client.eventChannel.status(1) == nil, "the client's port is unbound again")
            let live = mapped ? VchanLiveState.exited : .waitingForConnection
            #expect(raw.page.uint8(at: VchanLayout.clientLiveOffset) == live.rawValue)
        }
    }

    @Test(arguments: [(9, 11), (10, 10), (11, 11), (21, 12), (12, 0xFFFF), (0, 0)])
    func ordersOutOfRange(left: Int, right: Int) async throws {
        let setup = try await Setup()
        setup.raw.page.setUInt16(UInt16(left), at: VchanLayout.leftOrderOffset)
        setup.raw.page.setUInt16(UInt16(right), at: VchanLayout.rightOrderOffset)
        try await setup.raw.publish(rig: setup.rig, client: setup.client.id, port: "evil")
        await #expect(throws: VchanError.invalidRingOrders(left: left, right: right)) { try await setup.connect() }
        setup.expectNothingLeft()
    }

    @Test(arguments: ["", "abc", "0", "-1", " 12", "12 ", "4294967296", "1e3", "0x10", "12\u{0}"])
    func ringRefThatIsNotANumber(text: String) async throws {
        let setup = try await Setup()
        try await setup.raw.publish(rig: setup.rig, client: setup.client.id, port: "evil", ringRef: text)
        let path = "/local/domain/\(setup.server.id.rawValue)/data/vchan/\(setup.client.id.rawValue)/evil/ring-ref"
        await #expect(throws: VchanError.invalidValue(path: path, value: text)) { try await setup.connect() }
        setup.expectNothingLeft(mapped: false)
    }

    @Test(arguments: ["", "0", "port", "-5"])
    func eventChannelThatIsNotANumber(text: String) async throws {
        let setup = try await Setup()
        try await setup.raw.publish(rig: setup.rig, client: setup.client.id, port: "evil", eventChannel: text)
        let path = "/local/domain/\(setup.server.id.rawValue)/data/vchan/\(setup.client.id.rawValue)/evil/event-channel"
        await #expect(throws: VchanError.invalidValue(path: path, value: text)) { try await setup.connect() }
        setup.expectNothingLeft(mapped: false)
    }

    /// A ring-ref that names no grant of ours: mapping fails, the port is unbound again.
    @Test func ringRefNotGranted() async throws {
        let setup = try await Setup()
        try await setup.raw.publish(rig: setup.rig, client: setup.client.id, port: "evil", ringRef: "2000")
        await #expect(
            throws: VchanError.grant(
                op: "map_grant_ref_notify 2000", underlying: .notGranted(domain: setup.server.id, ref: 2000))
        ) {
            try await setup.connect()
        }
        setup.expectNothingLeft(mapped: false)
    }

    /// External rings whose grant list names pages never granted: the control page is unmapped again.
    @Test func ringGrantsNotGranted() async throws {
        let setup = try await Setup()
        setup.raw.page.setUInt16(12, at: VchanLayout.leftOrderOffset)
        setup.raw.page.setUInt32(1999, at: VchanLayout.grantsOffset)
        try await setup.raw.publish(rig: setup.rig, client: setup.client.id, port: "evil")
        await #expect(
            throws: VchanError.grant(
                op: "map_grant_refs 1", underlying: .notGranted(domain: setup.server.id, ref: 1999))
        ) {
            try await setup.connect()
        }
        setup.expectNothingLeft()
    }

    /// Indices already impossible when the client arrives.
    @Test func impossibleIndicesAtConnect() async throws {
        let setup = try await Setup()
        setup.raw.page.setUInt32(5000, at: VchanLayout.rightProducerOffset)
        try await setup.raw.publish(rig: setup.rig, client: setup.client.id, port: "evil")
        await #expect(throws: VchanError.producerOutOfRange(producer: 5000, consumer: 0, size: 2048)) {
            try await setup.connect()
        }
        setup.expectNothingLeft()
    }

    /// A server that changes its orders after the client mapped: the client keeps its own copy.
    @Test func ordersChangedLaterAreIgnored() async throws {
        let setup = try await Setup()
        try await setup.raw.publish(rig: setup.rig, client: setup.client.id, port: "evil")
        let clientEnd = try await setup.connect()
        setup.raw.page.setUInt16(20, at: VchanLayout.rightOrderOffset)
        setup.raw.page.setUInt16(20, at: VchanLayout.leftOrderOffset)
        #expect(clientEnd.ringSizes.rightSize == 2048)
        // 4000 bytes into the 1024-byte left ring: the client never writes beyond it.
        let written = try await clientEnd.writeSome(patternBytes(count: 4000, seed: 1))
        #expect(written == 1024)
        #expect(setup.raw.page.slice(from: 2048, count: 2048).bytes.allSatisfy { $0 == 0 }, "right ring untouched")
        await clientEnd.close()
    }
}
