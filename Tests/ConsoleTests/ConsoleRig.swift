import ConsoleBackend
import GrantTable
import SimulatedHypervisor
import Synchronization
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport

/// A simulated host: hypervisor, in-memory xenstored, dom0's privileged client, guests with their own
/// unprivileged xenstore connections — the package's ``SimulatedHost`` fixture, under the names these tests use.
struct ConsoleRig {
    let host = SimulatedHost()
    var hypervisor: SimulatedHypervisor { host.hypervisor }
    var server: XenStoreServer { host.xenstored }
    var dom0: XenStoreClient { host.dom0 }

    /// A guest as the toolstack builds one (``SimulatedHost/makeGuest(name:introduce:)``).
    typealias Guest = SimulatedGuest

    func makeGuest(introduce: Bool = false) async throws -> Guest { try await host.makeGuest(introduce: introduce) }

    /// Boots `guest`'s primary console the way the domain builder does; returns the guest's frontend.
    func bootPrimaryConsole(_ guest: Guest, startIndex: UInt32? = nil) async throws -> ConsoleFrontend {
        try await host.bootPrimaryConsole(guest, startIndex: startIndex)
    }

    /// A backend in dom0 for `id`.
    func backend(for id: ConsoleID) -> ConsoleBack { host.consoleBackend(for: id) }

    /// Creates extra console `devid` for `guest` and connects both ends.
    func connectExtraConsole(_ guest: Guest, devid: UInt32 = 1) async throws -> (ConsoleFrontend, ConsoleBackSession) {
        try await host.connectExtraConsole(guest, devid: devid, name: "test")
    }

    func read(_ path: String) -> String? { host.read(path) }
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
