import BlockBack
import BlockDevice
import BlockFront
import EventChannel
import GrantTable
import XenCore
import XenStoreClient
import Xenbus

/// The hostile guest and what serves it, carried from check to check (see ``HostileChecks``): the guest's
/// vbd on our ``BlockBack`` over a memory disk (a backend class the kernel's xen-blkback leaves alone), its
/// mappings counted, and a bystander disk that the dom0 kernel's xen-blkfront uses through another
/// `BlockBack.serve` of this process the whole time.
actor Hostile {
    var guest = GuestSession()
    var nodes: VirtualBlockDeviceNodes?
    var bystander: KernelFrontendDisk?
    let disk = MemoryBlockDevice(sizeSectors: HostileChecks.sectors)
    var grants: CountingGrantTable?
    var events: XenEventChannel?
    /// This process's gntdev pages before the group started.
    var baseline = 0
    /// Bystander round trips done so far (each one a write and a read both ways).
    var trips = 0
    /// Set once the primary console was broken on purpose (the last attack): it is then detached with an error.
    var primaryBroken = false

    // MARK: - Create and boot

    func create(_ report: Report) async throws {
        baseline = Gntdev.mappedPages()
        guest = try await GuestToolstack.start(config: HostileChecks.config, name: HostileChecks.name)
        let domain = try unwrap(guest.domain, "no domain")
        let bus = try self.bus()
        bystander = try await KernelFrontendDisk.attach(
            virtualDevice: HostileChecks.bystanderDevice, node: HostileChecks.bystanderNode,
            sectors: HostileChecks.sectors, bus: bus)
        nodes = VirtualBlockDeviceNodes(
            backendDomain: .dom0, frontendDomain: domain, deviceID: HostileChecks.virtualDevice,
            backendClass: HostileChecks.backendClass)
        grants = CountingGrantTable(GuardedGrantTable.wrap(try XenGrantTable(), label: "hostile"))
        events = try XenEventChannel()
        try await bystanderTrip()
        report.detail(
            "domid \(domain) created in \(guest.elapsed()); bystander \(HostileChecks.bystanderNode) on our BlockBack; "
                + "dom0 had \(baseline) gntdev pages mapped")
    }

    func boot(_ report: Report) async throws {
        let (session, reader, tty) = try await guest.openPrimary()
        guest.primary = reader
        try await guest.unpause()
        report.detail("\(session.id) on \(tty); the guest's runner ready at \(guest.elapsed())")
    }

    func bus() throws -> XenStoreBus { XenStoreBus(client: try unwrap(guest.client, "no xenstore client")) }

    // MARK: - One connection attempt

    /// What one `blk` attempt ended with: the guest's report and how `BlockBack.serve` ended.
    struct Outcome {
        let answer: [String: String]
        let text: String
        let served: Result<Void, any Error>

        /// How serve ended, for the details: "returned" or the typed error it threw.
        var ending: String {
            switch served {
            case .success: "serve returned"
            case .failure(let error): "serve threw \(type(of: error)): \(error)"
            }
        }
    }

    /// Fresh vbd directories, one `BlockBack.serve` of them, the guest's `blk mode` against it; then the
    /// checks every step shares: serve ended, the vbd is no longer Connected, no mapping of the guest is left,
    /// and the bystander still round-trips.
    func attempt(_ id: String, _ mode: String) async throws -> Outcome {
        let nodes = try unwrap(nodes, "no vbd nodes")
        let bus = try bus()
        try await nodes.destroy(in: bus)
        try await nodes.create(in: bus)
        let serving = try serve(nodes, bus: bus)
        let text = try await guest.ask(id, "blk \(mode) \(nodes.frontendPath) \(nodes.backendPath)", seconds: 150)
        let served = try await within(60, "BlockBack.serve to end after the guest's \(mode)") { await serving.result }
        try await settle(nodes, bus: bus)
        return Outcome(answer: DomUNetChecks.fields(text), text: text, served: served)
    }

    /// One `BlockBack.serve` of `nodes` with the counted grant table.
    func serve(_ nodes: VirtualBlockDeviceNodes, bus: XenStoreBus) throws -> Task<Void, any Error> {
        let grants = try unwrap(grants, "no grant table")
        let events = try unwrap(events, "no event channels")
        let disk = disk
        return Task {
            try await BlockBack.serve(
                disk, backendPath: nodes.backendPath, store: bus, grants: grants, events: events,
                options: BlockBackOptions(domain: .dom0))
        }
    }

    /// After a step: our vbd is not Connected, every mapping of the guest's pages is gone, the bystander works.
    func settle(_ nodes: VirtualBlockDeviceNodes, bus: XenStoreBus) async throws {
        let state = try await bus.state(of: nodes.backendPath)
        try require(state != .connected, "our vbd is still Connected after the step")
        let counts = try unwrap(grants, "no grant table").snapshot
        try require(counts.live == 0, "\(counts.live) mapping(s) of the guest's grants still alive")
        try await bystanderTrip()
    }

    func bystanderTrip() async throws {
        try await unwrap(bystander, "no bystander disk").roundTrip()
        trips += 1
    }

    /// "mapped N, refused M; bystander: K round trips" for the details.
    func summary() -> String {
        guard let counts = grants?.snapshot else { return "no grant table" }
        let text = "grants of the guest mapped \(counts.mapped), refused \(counts.refused), alive \(counts.live)"
        return text + "; bystander round trips \(trips)"
    }
}
