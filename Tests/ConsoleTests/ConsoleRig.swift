import ConsoleBackend
import GrantTable
import SimulatedHypervisor
import Synchronization
import XenCore
import XenStoreClient
import XenStoreServer

/// A simulated host: hypervisor, in-memory xenstored, dom0's privileged client, guests with their own
/// unprivileged xenstore connections.
struct ConsoleRig {
    let hypervisor = SimulatedHypervisor()
    let server = XenStoreServer()
    let dom0: XenStoreClient

    init() {
        dom0 = XenStoreClient(transport: server.connect(domain: .dom0))
    }

    /// A guest as the toolstack builds one: the domain, its xenstore directory (owned by dom0, readable by
    /// the guest), and the guest's own xenstore connection.
    struct Guest {
        let domain: SimulatedDomain
        let xenstore: XenStoreClient
        var id: DomainID { domain.id }
    }

    func makeGuest(introduce: Bool = false) async throws -> Guest {
        let domain = try hypervisor.createDomain()
        let path = "/local/domain/\(domain.id.rawValue)"
        let guestID = domain.id
        try await dom0.transaction { handle in
            try await handle.write(path, "")
            try await handle.setPermissions(path, to: XenStorePermissions(owner: .dom0, acl: [.init(.read, guestID)]))
            try await handle.write("\(path)/device", "")
            try await handle.setPermissions(
                "\(path)/device", to: XenStorePermissions(owner: guestID, acl: [.init(.read, .dom0)]))
            try await handle.write("\(path)/name", "guest\(guestID.rawValue)")
        }
        if introduce { server.introduceDomain(guestID) }
        return Guest(domain: domain, xenstore: XenStoreClient(transport: server.connect(domain: guestID)))
    }

    /// Boots `guest`'s primary console the way the domain builder does; returns the guest's frontend.
    func bootPrimaryConsole(_ guest: Guest, startIndex: UInt32? = nil) async throws -> ConsoleFrontend {
        let (page, info) = try ConsoleFrontend.buildPrimaryRing(
            grantTable: guest.domain.grantTable, eventChannel: guest.domain.eventChannel)
        if let startIndex {
            for offset in [
                ConsoleRingLayout.inConsOffset, ConsoleRingLayout.inProdOffset, ConsoleRingLayout.outConsOffset,
                ConsoleRingLayout.outProdOffset,
            ] {
                page.setUInt32(startIndex, at: offset)
            }
        }
        try await ConsoleToolstack.createPrimary(domain: guest.id, ring: info, xenstore: dom0)
        return try ConsoleFrontend(
            primaryPage: page, port: info.port, domain: guest.id, eventChannel: guest.domain.eventChannel)
    }

    /// A backend in dom0 for `id`.
    func backend(for id: ConsoleID) -> ConsoleBack {
        let dom0Domain = hypervisor.dom0
        return ConsoleBack(
            id: id, xenstore: dom0, grantTable: dom0Domain.grantTable, eventChannel: dom0Domain.eventChannel)
    }

    /// Creates extra console `devid` for `guest` and connects both ends.
    func connectExtraConsole(_ guest: Guest, devid: UInt32 = 1) async throws -> (
        ConsoleFrontend, ConsoleBackSession
    ) {
        let id = ConsoleID(domain: guest.id, device: .extra(devid))
        try await ConsoleToolstack.createDevice(id, name: "test", xenstore: dom0)
        let back = backend(for: id)
        async let session = back.connect()
        let frontend = try await ConsoleFrontend.connect(
            domain: guest.id, devid: devid, xenstore: guest.xenstore, gntshr: guest.domain.openGntshr(),
            eventChannel: guest.domain.eventChannel)
        return (frontend, try await session)
    }

    func read(_ path: String) -> String? {
        server.value(at: path).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// A sink that records everything, optionally slowly: small reads with yields in between.
final class RecordingSink: ConsoleSink {
    private let bytes = Mutex<[UInt8]>([])
    let readSize: Int
    let yieldsBetweenReads: Int
    /// Typed into the console (its input ring) before the first read, as a user at `xl console` would.
    let typing: [UInt8]

    init(readSize: Int = 4096, yieldsBetweenReads: Int = 0, typing: [UInt8] = []) {
        self.readSize = readSize
        self.yieldsBetweenReads = yieldsBetweenReads
        self.typing = typing
    }

    var received: [UInt8] { bytes.withLock { $0 } }

    func serve(_ console: ConsoleConnection) async throws(ConsoleError) {
        if !typing.isEmpty { try await console.write(typing) }
        while true {
            let chunk: [UInt8]
            do throws(ConsoleError) {
                chunk = try await console.read(maximum: readSize)
            } catch {
                if case .closed = error { return }
                throw error
            }
            bytes.withLock { $0 += chunk }
            for _ in 0..<yieldsBetweenReads { await Task.yield() }
        }
    }
}
