import EventChannel
import GrantTable
import SimulatedHypervisor
import Synchronization
import Testing
import Vchan
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport

/// A simulated host for vchan tests (the package's ``SimulatedHost``): domains with their xenstore
/// directories laid out as the toolstack does (`/local/domain/<id>` readable by the domain, its `data` subtree
/// writable by it, `domid` set).
struct VchanRig {
    let host = SimulatedHost()
    var hypervisor: SimulatedHypervisor { host.hypervisor }
    var store: XenStoreServer { host.xenstored }
    var dom0: XenStoreClient { host.dom0 }

    /// A new domain with its xenstore home (introduced, so `@releaseDomain` concerns it).
    func makeDomain() async throws -> SimulatedDomain { try await host.makeGuest(introduce: true).domain }

    /// The environment of `domain`: its own xenstore connection and interfaces. With `explicitDomid` false
    /// the endpoint reads xenstore's `domid` as libxenvchan does.
    func environment(_ domain: SimulatedDomain, explicitDomid: Bool = true) -> VchanEnvironment {
        host.vchanEnvironment(for: domain, explicitDomid: explicitDomid)
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
    func read(_ path: String) -> String? { host.read(path) }
}

/// Deterministic pseudo-random bytes (SplitMix64), so both ends can check what they received.
func patternBytes(count: Int, seed: UInt64) -> [UInt8] {
    var generator = SplitMix64(seed: seed)
    return generator.bytes(count: count)
}

/// Sends `up` from the client and `down` from the server at the same time, and checks both arrive whole; every
/// chunk received advances `progress`.
func exchange(
    server: VchanConnection, client: VchanConnection, up: [UInt8], down: [UInt8], progress: Progress? = nil
) async throws {
    async let sentUp: Void = client.write(up)
    async let sentDown: Void = server.write(down)
    async let gotUp = receive(up.count, from: server, progress: progress)
    async let gotDown = receive(down.count, from: client, progress: progress)
    try await sentUp
    try await sentDown
    #expect(try await gotUp == up)
    #expect(try await gotDown == down)
}

/// Exactly `count` bytes from `connection`, read as they come; each chunk advances `progress`.
func receive(_ count: Int, from connection: VchanConnection, progress: Progress?) async throws -> [UInt8] {
    var received: [UInt8] = []
    received.reserveCapacity(count)
    while received.count < count {
        let chunk = try await connection.read(maximum: count - received.count)
        received += chunk
        progress?.advance(chunk.count)
    }
    return received
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

/// What a test's body has done so far (rounds, bytes), for ``whileProgressing(stall:_:_:)``.
final class Progress: Sendable {
    private let count = Atomic<Int>(0)

    func advance(_ by: Int = 1) { count.add(by, ordering: .relaxed) }

    var value: Int { count.load(ordering: .relaxed) }
}

/// One slice of ``whileProgressing(stall:_:_:)`` ended with the body still running.
private struct Stalled: Error {}

/// Runs `body`, failing with a message once it has made no progress (it advances the counter it is given) for
/// `stall` seconds: a hang (a missed notification) fails the test, a slow machine (loaded, sanitized, the suite
/// running beside) only makes it take longer. A time limit on the whole body would fail on a slow machine too.
func whileProgressing<T: Sendable>(
    stall seconds: Double, _ what: String, _ body: @escaping @Sendable (Progress) async throws -> T
) async throws -> T {
    let progress = Progress()
    let work = Task { try await body(progress) }
    var last = progress.value
    while true {
        do {
            return try await withTimeLimit(.seconds(seconds), timeout: { Stalled() }) { try await work.value }
        } catch is Stalled {
            let now = progress.value
            guard now != last else {
                work.cancel()
                throw Timeout(description: "no progress for \(seconds) s (at \(now)): \(what)")
            }
            last = now
        }
    }
}

func within<T: Sendable>(
    _ seconds: Double, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withTimeLimit(
        .seconds(seconds), timeout: { Timeout(description: "timed out after \(seconds) s: \(what)") }, body)
}
