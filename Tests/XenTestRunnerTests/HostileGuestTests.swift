import BlockBack
import BlockDevice
import BlockFront
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport

@testable import xen_test_runner

/// The hostile guest's blkif attacks (what `xen-test-runner hostile-guest` does inside the `hostile` group's
/// domU) against BlockBack on the simulated hypervisor: the same code, the same expectations as the real-Xen
/// checks, with simulated grants, event channels and an in-process xenstore.
@Suite struct HostileGuestTests {
    struct Rig {
        let host = SimulatedHost()
        var store: XenStoreBus { host.dom0Bus }
        let devices: GuestDevices
        let grants: CountingGrantTable
        let nodes: VirtualBlockDeviceNodes
        let guest: SimulatedDomain

        init() throws {
            let guest = try host.createGuest(name: "hostile")
            self.guest = guest.domain
            devices = GuestDevices(
                client: guest.xenstore, bus: guest.bus, gntshr: guest.domain.openGntshr(),
                events: guest.domain.eventChannel)
            grants = CountingGrantTable(host.dom0Domain.grantTable)
            nodes = VirtualBlockDeviceNodes(
                backendDomain: .dom0, frontendDomain: guest.id, deviceID: 51712, backendClass: "swiftxen-vbd")
        }

        /// One serve of fresh nodes and the guest's `blk mode`: its report and how serve ended. Fails after
        /// two minutes instead of hanging the suite.
        func attempt(_ mode: String) async throws -> (answer: [String: String], text: String, error: (any Error)?) {
            try await within(120, "blk \(mode)") { try await attemptUnbounded(mode) }
        }

        private func attemptUnbounded(
            _ mode: String
        ) async throws -> (answer: [String: String], text: String, error: (any Error)?) {
            try await nodes.destroy(in: store)
            try await nodes.create(in: store)
            let serving = serve()
            let text = try await HostileAttacks.blk(
                mode, front: nodes.frontendPath, back: nodes.backendPath, devices: devices)
            let ending: (any Error)?
            do {
                try await serving.value
                ending = nil
            } catch { ending = error }
            #expect(try await store.state(of: nodes.backendPath) != .connected)
            #expect(grants.snapshot.live == 0)
            return (DomUNetChecks.fields(text), text, ending)
        }

        func serve() -> Task<Void, any Error> {
            let (store, grants, events, path) = (store, grants, host.dom0Domain.eventChannel, nodes.backendPath)
            return Task {
                try await BlockBack.serve(
                    MemoryBlockDevice(sizeSectors: HostileAttacks.sectors), backendPath: path, store: store,
                    grants: grants, events: events, options: BlockBackOptions(domain: .dom0))
            }
        }
    }

    static func broke(_ error: (any Error)?) -> Bool {
        guard let error = error as? BlockBackError, case .frontendBroke = error else { return false }
        return true
    }

    @Test func requestProducerBeyondTheRingDisconnects() async throws {
        let (answer, text, error) = try await Rig().attempt("overflow")
        #expect(answer["first"] == "OKAY", "\(text)")
        #expect(answer["overflowed"] == "Closing" || answer["overflowed"] == "Closed", "\(text)")
        #expect(Self.broke(error), "\(String(describing: error))")
    }

    @Test func replayedRequestsAreAnsweredAndARewindDisconnects() async throws {
        let (answer, text, error) = try await Rig().attempt("replay")
        #expect(answer["okay"] == "96", "\(text)")
        #expect(Self.broke(error), "\(String(describing: error))")
    }

    @Test func slotsRewrittenWhileReadAreEachAnsweredOnce() async throws {
        let (answer, text, error) = try await Rig().attempt("flip")
        #expect(answer["answered"] == "128/128", "\(text)")
        #expect(error == nil, "\(String(describing: error))")
    }

    @Test(arguments: ["requests", "requests-persistent"])
    func garbageRequestsAreAnsweredWithErrors(_ mode: String) async throws {
        let (answer, text, error) = try await Rig().attempt(mode)
        #expect(answer["answered"] == "24/24" && answer["mismatches"] == "none", "\(text)")
        #expect(error == nil, "\(String(describing: error))")
    }

    @Test(arguments: ["ring-never-granted", "ring-read-only", "ring-bogus-port"])
    func badRingsAreRefused(_ mode: String) async throws {
        let (answer, text, error) = try await Rig().attempt(mode)
        #expect(answer["backend"] == "Closing" || answer["backend"] == "Closed", "\(text)")
        guard let error = error as? BlockBackError, case .resources = error else {
            Issue.record("serve ended with \(String(describing: error))")
            return
        }
    }

    @Test func aCleanConnectionWritesAndReadsBack() async throws {
        let (answer, text, error) = try await Rig().attempt("clean")
        #expect(answer["write"] == "OKAY" && answer["read"] == "OKAY" && answer["same"] == "true", "\(text)")
        #expect(error == nil, "\(String(describing: error))")
    }

    @Test func stateFlappingEndsServedAgain() async throws {
        let rig = try Rig()
        try await rig.nodes.create(in: rig.store)
        try await within(120, "20 flaps") { try await flap(rig) }
    }

    private func flap(_ rig: Rig) async throws {
        let nodes = rig.nodes
        let store = rig.store
        let serving = Task {
            var errors = 0
            while errors < 100, (try? await nodes.isOnline(in: store)) == true {
                do { try await rig.serve().value } catch { errors += 1 }
            }
            return errors
        }
        let text = try await HostileGuest.flap(
            20, front: nodes.frontendPath, back: nodes.backendPath, devices: rig.devices)
        try await store.write(nodes.backendPath + "/online", "0")
        let errors = await serving.value
        #expect(DomUNetChecks.fields(text)["read"] == "OKAY", "\(text)")
        #expect(errors < 100)
        #expect(rig.grants.snapshot.live == 0)
    }
}

/// The hostile guest's xenstore flood against our own XenStoreServer (the real-Xen group runs it against C
/// xenstored and oxenstored): every kind of request stops at a quota, and the connection still answers.
@Suite struct HostileFloodTests {
    @Test func theFloodStopsAtTheServersQuotas() async throws {
        let server = XenStoreServer()
        let guest = DomainID(7)
        let dom0 = XenStoreClient(transport: server.connect(domain: .dom0))
        let home = "/local/domain/\(guest)"
        try await dom0.immediate { handle in
            try await handle.write(home + "/name", "hostile")
            try await handle.write(home + "/data", "")
            try await handle.setPermissions(home, to: XenStorePermissions(owner: guest, others: .none, acl: []))
            try await handle.setPermissions(
                home + "/data", to: XenStorePermissions(owner: guest, others: .none, acl: []))
            try await handle.setPermissions(
                home + "/name", to: XenStorePermissions(owner: guest, others: .none, acl: []))
        }
        let client = XenStoreClient(transport: server.connect(domain: guest))
        let text = try await within(120, "the flood") { try await HostileFlood.run(home: home, client: client) }
        let answer = DomUNetChecks.fields(text)
        #expect(answer["after"] == "ok", "\(text)")
        #expect(answer["big"] != "none", "\(text)")
        for key in ["nodes", "watches"] {
            #expect(answer[key].map { !$0.hasSuffix("/none") } ?? false, "\(key): \(text)")
        }
    }
}
