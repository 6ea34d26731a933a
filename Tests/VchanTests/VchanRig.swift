import EventChannel
import GrantTable
import SimulatedHypervisor
import Synchronization
import Testing
import Vchan
import XenCore
import XenStoreClient
import XenStoreServer

/// A simulated host for vchan tests: the hypervisor, an in-memory xenstored, and domains with their
/// xenstore directories laid out as the toolstack does (`/local/domain/<id>` readable by the domain, its
/// `data` subtree writable by it, `domid` set).
struct VchanRig {
    let hypervisor = SimulatedHypervisor()
    let store = XenStoreServer()
    let dom0: XenStoreClient

    init() {
        dom0 = XenStoreClient(transport: store.connect(domain: .dom0))
    }

    /// A new domain with its xenstore home (introduced, so `@releaseDomain` concerns it).
    func makeDomain() async throws -> SimulatedDomain {
        let domain = try hypervisor.createDomain()
        try await prepareHome(domain.id)
        store.introduceDomain(domain.id)
        return domain
    }

    /// `/local/domain/<id>` with `domid`, and `data` owned by the domain.
    func prepareHome(_ id: DomainID) async throws {
        let home = "/local/domain/\(id.rawValue)"
        try await dom0.transaction { handle in
            try await handle.write(home, "")
            try await handle.setPermissions(home, to: XenStorePermissions(owner: .dom0, acl: [.init(.read, id)]))
            try await handle.write("\(home)/domid", "\(id.rawValue)")
            try await handle.write("\(home)/data", "")
            try await handle.setPermissions(
                "\(home)/data", to: XenStorePermissions(owner: id, acl: [.init(.read, .dom0)]))
        }
    }

    /// The environment of `domain`: its own xenstore connection and interfaces. With `explicitDomid` false
    /// the endpoint reads xenstore's `domid` as libxenvchan does.
    func environment(_ domain: SimulatedDomain, explicitDomid: Bool = true) -> VchanEnvironment {
        VchanEnvironment(
            xenstore: XenStoreClient(transport: store.connect(domain: domain.id)), eventChannel: domain.eventChannel,
            gntshr: domain.openGntshr(), grantTable: domain.grantTable,
            localDomain: explicitDomid ? domain.id : nil)
    }

    /// A connected pair: a server in `server` for a client in `client`.
    func connect(
        server: SimulatedDomain, client: SimulatedDomain, port: String = "test", readSize: Int = 1024,
        writeSize: Int = 2048, options: VchanOptions = VchanOptions()
    ) async throws -> (server: VchanConnection, client: VchanConnection) {
        let vchanPort = try VchanPort(port)
        let serverEnvironment = environment(server)
        async let listening = VchanServer.listen(
            domain: client.id, port: vchanPort, readSize: readSize, writeSize: writeSize,
            environment: serverEnvironment, options: options)
        let connected = try await VchanClient.connect(
            domain: server.id, port: vchanPort, environment: environment(client), options: options)
        return (try await listening, connected)
    }

    /// The string value at `path`, if any.
    func read(_ path: String) -> String? {
        store.value(at: path).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// Deterministic pseudo-random bytes (SplitMix64), so both ends can check what they received.
func patternBytes(count: Int, seed: UInt64) -> [UInt8] {
    var generator = SplitMix64(seed: seed)
    return generator.bytes(count: count)
}

/// Sends `up` from the client and `down` from the server at the same time, and checks both arrive whole.
func exchange(server: VchanConnection, client: VchanConnection, up: [UInt8], down: [UInt8]) async throws {
    async let sentUp: Void = client.write(up)
    async let sentDown: Void = server.write(down)
    async let gotUp = server.read(exactly: up.count)
    async let gotDown = client.read(exactly: down.count)
    try await sentUp
    try await sentDown
    #expect(try await gotUp == up)
    #expect(try await gotDown == down)
}

/// Reads everything until the peer closes.
func drain(_ connection: VchanConnection, maximum: Int = 65536) async throws -> [UInt8] {
    var received: [UInt8] = []
    for try await chunk in connection.chunks(maximum: maximum) { received += chunk }
    return received
}

/// Fails with a message after `seconds` instead of hanging the suite.
struct Timeout: Error, CustomStringConvertible {
    let description: String
}

func within<T: Sendable>(
    _ seconds: Double, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withTimeLimit(
        .seconds(seconds), timeout: { Timeout(description: "timed out after \(seconds) s: \(what)") }, body)
}
