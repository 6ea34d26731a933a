public import SimulatedHypervisor
public import XenCore
public import XenStoreClient
public import XenStoreServer
public import Xenbus

/// A whole simulated host in one process: the simulated hypervisor, an in-memory xenstored and dom0's
/// privileged connection to it; guests are added with ``makeGuest(name:introduce:)`` or ``createGuest(name:)``.
///
/// The fixture the demo, the benchmarks, the real-Xen runner's unit tests and the package's own tests share
/// (as swift-nio's `NIOEmbedded` serves NIO's users): build one, attach devices to it with ``SimulatedVbd``
/// or the console helpers, and drive both ends from a test. No Xen is needed.
public struct SimulatedHost: Sendable {
    /// The simulated hypervisor (grant tables, event channels, domains).
    public let hypervisor: SimulatedHypervisor
    /// The in-memory xenstored every connection of this host talks to.
    public let xenstored: XenStoreServer
    /// dom0's privileged xenstore connection (the toolstack's and the backends').
    public let dom0: XenStoreClient
    /// ``dom0`` as the device drivers' seam.
    public let dom0Bus: XenStoreBus

    /// A host on `hypervisor` (by default one with the simulator's defaults: 2048 grant entries a domain,
    /// released pages fenced) and a fresh xenstored.
    public init(hypervisor: SimulatedHypervisor = SimulatedHypervisor()) {
        self.hypervisor = hypervisor
        xenstored = XenStoreServer()
        dom0 = XenStoreClient(transport: xenstored.connect(domain: .dom0))
        dom0Bus = XenStoreBus(client: dom0)
    }

    /// dom0's simulated domain (its grant table and event channels serve the backends).
    public var dom0Domain: SimulatedDomain { hypervisor.dom0 }

    /// A new xenstore connection on behalf of `domain`, with that domain's permissions.
    public func connect(_ domain: DomainID) -> XenStoreClient {
        XenStoreClient(transport: xenstored.connect(domain: domain))
    }

    /// Creates a guest domain and its own unprivileged xenstore connection, and nothing in xenstore: a bare
    /// domain, as `SimulatedHypervisor.createDomain` makes one.
    public func createGuest(name: String = "guest") throws -> SimulatedGuest {
        let domain = try hypervisor.createDomain(name: name)
        return SimulatedGuest(domain: domain, xenstore: connect(domain.id))
    }

    /// Creates a guest as a toolstack does: the domain, its own unprivileged xenstore connection, and what a
    /// toolstack writes for a new domain: `/local/domain/<id>` (owned by dom0, readable by the guest) with
    /// `domid`, `name` (`guest<id>` unless given), and the `device` and `data` directories (owned by the
    /// guest). With `introduce` xenstored fires `@introduceDomain` for it (what `ConsoleDaemon` follows).
    public func makeGuest(name: String? = nil, introduce: Bool = false) async throws -> SimulatedGuest {
        let guest = try createGuest(name: name ?? "guest")
        let id = guest.id
        let path = "/local/domain/\(id.rawValue)"
        try await dom0.transaction { handle in
            try await handle.write(path, "")
            try await handle.setPermissions(path, to: XenStorePermissions(owner: .dom0, acl: [.init(.read, id)]))
            try await handle.write("\(path)/domid", "\(id.rawValue)")
            try await handle.write("\(path)/name", name ?? "guest\(id.rawValue)")
            for directory in ["device", "data"] {
                try await handle.write("\(path)/\(directory)", "")
                try await handle.setPermissions(
                    "\(path)/\(directory)", to: XenStorePermissions(owner: id, acl: [.init(.read, .dom0)]))
            }
        }
        if introduce { xenstored.introduceDomain(id) }
        return guest
    }

    /// The value stored at `path`, read straight from xenstored (no permission check), as text.
    public func read(_ path: String) -> String? {
        xenstored.value(at: path).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// A guest of a ``SimulatedHost``: its domain (grant table, event channels) and its own xenstore connection.
public struct SimulatedGuest: Sendable {
    /// The guest's simulated domain.
    public let domain: SimulatedDomain
    /// The guest's unprivileged xenstore connection.
    public let xenstore: XenStoreClient
    /// ``xenstore`` as the device drivers' seam.
    public let bus: XenStoreBus

    init(domain: SimulatedDomain, xenstore: XenStoreClient) {
        self.domain = domain
        self.xenstore = xenstore
        bus = XenStoreBus(client: xenstore)
    }

    /// The guest's domain ID.
    public var id: DomainID { domain.id }
}
