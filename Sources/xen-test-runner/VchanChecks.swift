import GrantTable
import Vchan
import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Vchan against C libxenvchan in dom0 (domid 0 ↔ 0): Xen's own `vchan-socket-proxy` in either role and
/// libxenvchan driven by `vchan-peer` children, 16 MiB of checked pattern bytes each way with one-page and
/// multi-page rings; the C peer killed mid-stream; throughput of C↔C against Swift↔Swift in the same boot.
enum VchanChecks {
    static let proxy = "/usr/bin/vchan-socket-proxy"
    static let volume = 16 << 20
    static let down = VchanPattern(seed: 0xD0)  // server → client
    static let up = VchanPattern(seed: 0x0F)  // client → server
    /// No re-check timer: every wake-up must come from an event (the kill checks: the unmap notification's).
    static func eventsOnly(path: String? = nil) -> VchanOptions {
        VchanOptions(recheckInterval: nil, connectTimeout: .seconds(60), xenstorePath: path)
    }

    /// The transfers run as a user's would, with the default re-check timer: this platform loses an event
    /// now and then (two `vchan-socket-proxy` processes stall on it too, no Swift involved), and the timer
    /// makes up for a lost incoming event and sends a lost outgoing one again.
    static func defaults(path: String? = nil) -> VchanOptions {
        VchanOptions(connectTimeout: .seconds(60), xenstorePath: path)
    }

    /// The connection's event counters. Not a pass/fail figure: under load an event still on its way counts
    /// as a timer rescue too. What bounds the timer's share is the check's own limit: a transfer left to the
    /// timer moves one ring's worth per second, far too slow for 16 MiB in 200 s.
    static func eventDetail(_ connection: VchanConnection) -> String {
        let (received, resent, rescued) = connection.eventStatistics
        return "\(received) events in, \(resent) sent again, \(rescued) timer wake-ups over waiting bytes or room"
    }

    static func run(_ report: Report) async {
        await report.check("vchan: our server publishes as libxenvchan does (ring-ref, event-channel, perms)") {
            try await withEnvironment { environment in
                let server = try await VchanServer.publish(
                    domain: .dom0, port: try VchanPort("layout"), environment: environment)
                let path = "/local/domain/0/data/vchan/0/layout"
                try require(server.xenstorePath == path, "path \(server.xenstorePath)")
                let (ref, port, perms) = try await environment.xenstore.immediate { handle in
                    (
                        try await handle.read("\(path)/ring-ref"), try await handle.read("\(path)/event-channel"),
                        try await handle.permissions(of: "\(path)/ring-ref")
                    )
                }
                try require(ref == "\(server.ringRef.rawValue)", "ring-ref \(ref)")
                try require(port == "\(server.localPort.rawValue)", "event-channel \(port)")
                // Owned by the server, nothing for others, read for the client (here dom0 itself).
                try require(perms.owner == .dom0 && perms.others == .none, "permissions \(perms)")
                report.detail("permissions \(perms)")
                await server.close()
                let gone = try await environment.xenstore.immediate { try await $0.exists(path) }
                try require(!gone, "entries left after close")
            }
        }
        for (label, read, write) in [("1-page rings", 1024, 2048), ("64 KiB/1 MiB rings", 65536, 1 << 20)] {
            await report.check(
                "vchan: our server (\(label)) <-> vchan-socket-proxy client, 16 MiB each way", limit: 240
            ) {
                try await ourServerWithProxyClient(readSize: read, writeSize: write, report: report)
            }
        }
        await report.check(
            "vchan: vchan-socket-proxy server (1-page rings) <-> our client, 16 MiB each way", limit: 240
        ) {
            try await proxyServerWithOurClient(report: report)
        }
        await report.check("vchan: libxenvchan server (64 KiB/1 MiB rings) <-> our client, 16 MiB each way", limit: 240)
        {
            try await cServerWithOurClient(report: report)
        }
        await report.check("vchan: our server (1 MiB/64 KiB rings) <-> libxenvchan client, 16 MiB each way", limit: 240)
        {
            try await ourServerWithCClient(report: report)
        }
        for proxyIsServer in [false, true] {
            let role = proxyIsServer ? "server" : "client"
            await report.check(
                "vchan: vchan-socket-proxy \(role) killed mid-stream: typed error within 1 s", limit: 120
            ) {
                try await killedPeer(proxyIsServer: proxyIsServer, report: report)
            }
        }
        await report.check(
            "vchan: throughput, libxenvchan C<->C vs SwiftXen<->SwiftXen (separate processes)", limit: 540
        ) {
            try await throughput(report: report)
        }
    }

    // MARK: - Interop

    private static func ourServerWithProxyClient(readSize: Int, writeSize: Int, report: Report) async throws {
        try await withEnvironment { environment in
            let server = try await VchanServer.publish(
                domain: .dom0, port: try VchanPort("proxy\(writeSize)"), readSize: readSize, writeSize: writeSize,
                environment: environment, options: defaults())
            try await closing(server, report) {
                let peer = try SpawnedProcess([proxy, "0", server.xenstorePath, "-"], name: "proxy-client")
                try await quoting(peer) {
                    try await within(60, "vchan-socket-proxy connecting") { try await server.waitForPeer() }
                    let seconds = try await exchangeThroughProxy(server, peer, outgoing: down, incoming: up)
                    peer.closeInput()  // the proxy's stdin ends: it flushes, closes the vchan and exits
                    let status = await peer.wait(seconds: 30)
                    try require(status == 0, "vchan-socket-proxy exit \(String(describing: status))")
                    try await expectPeerClosed(server)
                    report.detail(
                        "\(server.ringSizes), \(rate(2 * volume, seconds)) MB/s both ways together, "
                            + eventDetail(server))
                }
            }
        }
    }

    /// Two `vchan-socket-proxy` processes joined by one vchan (1-page rings, the proxy's default), each fed
    /// and drained through its stdin and stdout by the runner: libxenvchan on both ends, no Swift on the
    /// ring. A measurement of the platform, not of us: on Xen under QEMU TCG such a pair sometimes stalls on
    /// a lost event, and then the line quotes the shared page (read through a mapping of the server's grant)
    /// and Xen's view of both ports, and both proxies are ended.
    private static func proxyWithProxy() async throws -> String {
        let path = "/local/domain/0/data/vchan/0/proxypair"
        let server = try SpawnedProcess([proxy, "--mode=server", "0", path, "-"], name: "proxy-server")
        let client = try SpawnedProcess([proxy, "0", path, "-"], name: "proxy-client")
        let watch = Task { () -> String? in
            // Cancelled once the transfer is done; otherwise the stall (or the time limit) ends it.
            guard let stalled = try? await stallWatch(path, seconds: 30, limit: 200) else { return nil }
            for peer in [server, client] { peer.send(SIGKILL) }
            return stalled
        }
        let start = MonotonicClock.seconds()
        async let fedServer = feedPipe(server.inputDescriptor, count: volume, pattern: down)
        async let fedClient = feedPipe(client.inputDescriptor, count: volume, pattern: up)
        async let drainedClient = drainPipe(client.output, count: volume, pattern: down)
        async let drainedServer = drainPipe(server.output, count: volume, pattern: up)
        let moved = await (fedServer, fedClient, drainedClient, drainedServer)
        let seconds = MonotonicClock.seconds() - start
        guard moved.2 == volume, moved.3 == volume else {
            let page = await watch.value
            return "C<->C proxy pair, 1-page, 16 MiB each way: server→client \(moved.2), client→server "
                + "\(moved.3) bytes, then \(page ?? "the page unreadable")"
        }
        watch.cancel()
        client.closeInput()  // the client flushes, closes the vchan and exits; the server follows
        try require(await client.wait(seconds: 30) == 0, "client proxy exit \(client.errorTail)")
        try require(await server.wait(seconds: 30) == 0, "server proxy exit \(server.errorTail)")
        return "C<->C proxy pair, 1-page, 16 MiB each way: \(rate(2 * volume, seconds)) MB/s both ways together"
    }

    /// Watches the header of the vchan published at `path` (a read-only mapping of its ring-ref): returns
    /// its description once it has not changed for `seconds` (stalled) or after `limit` seconds in all
    /// (too slow); throws when cancelled.
    private static func stallWatch(_ path: String, seconds: Int, limit: Int) async throws -> String {
        let xenstore = try await XenStoreClient.make()
        defer { Task { await xenstore.close() } }
        var ref: String?
        for _ in 0..<600 where ref == nil {
            ref = try? await xenstore.immediate { try await $0.read("\(path)/ring-ref") }
            if ref == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        guard let ref, let raw = UInt32(ref) else { return "no ring-ref at \(path)" }
        let grants = try XenGrantTable()
        // The view keeps the page mapped; the mapping goes (unmapped) with the last view, at return.
        let page = try grants.map(domain: .dom0, ref: GrantRef(raw), writable: false).buffer
        func header() -> [UInt8] { (0..<VchanLayout.headerSize).map { page.uint8(at: $0) } }
        var last = header()
        var unchanged = 0
        var elapsed = 0
        while true {
            try await Task.sleep(for: .seconds(1))
            elapsed += 1
            let now = header()
            unchanged = now == last ? unchanged + 1 : 0
            last = now
            if unchanged >= seconds || elapsed >= limit {
                let verdict = unchanged >= seconds ? "stalled for \(unchanged) s" : "still moving at \(limit) s"
                let port = (try? await xenstore.immediate { try await $0.read("\(path)/event-channel") })
                    .flatMap { UInt32($0) }
                var xen = "no event-channel"
                if let port { xen = await xenPortStates(port) }
                return "\(verdict): " + describeHeader(page) + "; " + xen
            }
        }
    }

    /// Xen's own view of a dom0 event channel and of its other end (`xl debug-keys e`, then the lines of
    /// both ports from `xl dmesg`: `port [pending/masked/...]: s=state n=vcpu ... d=remote p=remote-port`).
    static func xenPortStates(_ port: UInt32) async -> String {
        guard (try? await ChildProcess.run([GuestToolstack.xl, "debug-keys", "e"], seconds: 20))?.status == 0,
            let dump = try? await ChildProcess.run([GuestToolstack.xl, "dmesg"], seconds: 20)
        else { return "xl debug-keys e failed" }
        // Only domain 0's table (the last dump in the ring), both ends of the channel.
        let lines = dump.output.split(separator: "\n").map(String.init)
        guard let start = lines.lastIndex(where: { $0.contains("Event channel information for domain 0:") })
        else { return "no event channel dump" }
        var ports: Set<UInt32> = [port]
        var found: [String] = []
        for line in lines[start...].dropFirst() {
            if line.contains("Event channel information for domain") { break }
            let words = line.split(separator: " ").drop { $0 == "(XEN)" }
            guard let first = words.first, let number = UInt32(first) else { continue }
            let remote = words.last.flatMap { $0.hasPrefix("p=") ? UInt32($0.dropFirst(2)) : nil }
            if ports.contains(number) || remote == port {
                found.append(words.joined(separator: " "))
                if let remote { ports.insert(remote) }
            }
        }
        return "Xen: " + found.joined(separator: " | ")
    }

    /// The libxenvchan header as both ends see it: indices, live bytes, notify requests.
    private static func describeHeader(_ page: PageBuffer) -> String {
        let l = (page.uint32(at: VchanLayout.leftConsumerOffset), page.uint32(at: VchanLayout.leftProducerOffset))
        let r = (page.uint32(at: VchanLayout.rightConsumerOffset), page.uint32(at: VchanLayout.rightProducerOffset))
        return "left (client→server) cons \(l.0) prod \(l.1), right (server→client) cons \(r.0) prod \(r.1), "
            + "live cli \(page.uint8(at: VchanLayout.clientLiveOffset)) srv \(page.uint8(at: VchanLayout.serverLiveOffset)), "
            + "cli_notify \(page.uint8(at: VchanLayout.clientNotifyOffset)) "
            + "srv_notify \(page.uint8(at: VchanLayout.serverNotifyOffset))"
    }

    private static func proxyServerWithOurClient(report: Report) async throws {
        try await withEnvironment { environment in
            let path = "/local/domain/0/data/vchan/0/proxyserver"
            let peer = try SpawnedProcess([proxy, "--mode=server", "0", path, "-"], name: "proxy-server")
            try await quoting(peer) {
                let client = try await VchanClient.connect(
                    domain: .dom0, port: try VchanPort("proxyserver"), environment: environment,
                    options: defaults(path: path))
                try await closing(client, report) {
                    let seconds = try await exchangeThroughProxy(client, peer, outgoing: up, incoming: down)
                    await client.close()  // the proxy sees the client leave, flushes and exits
                    let status = await peer.wait(seconds: 30)
                    try require(status == 0, "vchan-socket-proxy exit \(String(describing: status))")
                    report.detail(
                        "\(client.ringSizes), \(rate(2 * volume, seconds)) MB/s both ways together, "
                            + eventDetail(client))
                }
            }
        }
    }

    private static func cServerWithOurClient(report: Report) async throws {
        try await withEnvironment { environment in
            let path = "/local/domain/0/data/vchan/0/cserver"
            let peer = try startPeer("c", "server", path, 65536, 1 << 20, send: volume, receive: volume, down, up)
            try await quoting(peer) {
                try await expectLine(peer, "PUBLISHED")
                let client = try await VchanClient.connect(
                    domain: .dom0, port: try VchanPort("cserver"), environment: environment,
                    options: defaults(path: path))
                try await closing(client, report) {
                    let seconds = try await timedExchange(client, outgoing: up, incoming: down)
                    _ = try await finished(peer)
                    await client.close()
                    try require(await peer.wait(seconds: 30) == 0, "libxenvchan peer exit")
                    report.detail(
                        "\(client.ringSizes), \(rate(2 * volume, seconds)) MB/s both ways together, "
                            + eventDetail(client))
                }
            }
        }
    }

    private static func ourServerWithCClient(report: Report) async throws {
        try await withEnvironment { environment in
            let server = try await VchanServer.publish(
                domain: .dom0, port: try VchanPort("cclient"), readSize: 1 << 20, writeSize: 65536,
                environment: environment, options: defaults())
            try await closing(server, report) {
                let peer = try startPeer(
                    "c", "client", server.xenstorePath, 0, 0, send: volume, receive: volume, up, down)
                try await quoting(peer) {
                    try await expectLine(peer, "CONNECTED")
                    try await within(30, "the C client") { try await server.waitForPeer() }
                    let seconds = try await timedExchange(server, outgoing: down, incoming: up)
                    _ = try await finished(peer)
                    try require(await peer.wait(seconds: 30) == 0, "libxenvchan peer exit")
                    try await expectPeerClosed(server)
                    report.detail(
                        "\(server.ringSizes), \(rate(2 * volume, seconds)) MB/s both ways together, "
                            + eventDetail(server))
                }
            }
        }
    }

    // MARK: - A C peer killed

    private static func killedPeer(proxyIsServer: Bool, report: Report) async throws {
        try await withEnvironment { environment in
            let path = "/local/domain/0/data/vchan/0/killed\(proxyIsServer ? "s" : "c")"
            let ours: VchanConnection
            let peer: SpawnedProcess
            if proxyIsServer {
                peer = try SpawnedProcess([proxy, "--mode=server", "0", path, "-"], name: "proxy-killed")
                ours = try await VchanClient.connect(
                    domain: .dom0, port: try VchanPort("killeds"), environment: environment,
                    options: eventsOnly(path: path))
            } else {
                ours = try await VchanServer.publish(
                    domain: .dom0, port: try VchanPort("killedc"), environment: environment, options: eventsOnly())
                peer = try SpawnedProcess([proxy, "0", path, "-"], name: "proxy-killed")
                try await within(60, "vchan-socket-proxy connecting") { try await ours.waitForPeer() }
            }
            try await closing(ours, report) {
                try await quoting(peer) { try await killMidStream(ours, peer, report: report) }
            }
        }
    }

    /// Streams both ways without end, kills the proxy once a MiB has come through, and times how long our
    /// side takes to fail with a typed error (the kernel's unmap notification is its only news).
    private static func killMidStream(_ ours: VchanConnection, _ peer: SpawnedProcess, report: Report) async throws {
        let endless = 1 << 40
        let feeding = Task { await feedPipe(peer.inputDescriptor, count: endless, pattern: up) }
        let draining = Task { await drainPipe(peer.output, count: endless, pattern: down) }
        let streaming = Task { () -> (VchanError?, Double) in
            do {
                _ = try await exchange(ours, send: endless, outgoing: down, receive: endless, incoming: up)
                return (nil, MonotonicClock.seconds())
            } catch let error as VchanError {
                return (error, MonotonicClock.seconds())
            } catch {
                return (nil, MonotonicClock.seconds())
            }
        }
        try await within(60, "the first MiB") {
            while ours.statistics.received < 1 << 20 { try await Task.sleep(for: .milliseconds(20)) }
        }
        let killed = MonotonicClock.seconds()
        peer.send(SIGKILL)
        let (error, ended) = try await within(30, "our side noticing") { await streaming.value }
        _ = await peer.wait(seconds: 10)
        _ = await (feeding.value, draining.value)
        let latency = ended - killed
        try require(error == .peerClosed, "our side ended with \(String(describing: error))")
        try require(latency < 1, "typed error after \(latency) s")
        report.detail("\(error.map { "\($0)" } ?? "-") after \(Int(latency * 1000)) ms")
    }

    // MARK: - Throughput

    /// The same one-way transfer twice per ring size: two libxenvchan processes, then two processes of ours.
    private static func throughput(report: Report) async throws {
        var lines: [String] = []
        for (label, size, volume) in [("1-page", 2048, 4 << 20), ("64 KiB", 65536, 16 << 20)] {
            var rates: [String: Double] = [:]
            for implementation in ["c", "swift"] {
                let path = "/local/domain/0/data/vchan/0/bench\(implementation)\(size)"
                let server = try startPeer(
                    implementation, "server", path, 1024, size, send: volume, receive: 0, down, up)
                try await expectLine(server, "PUBLISHED")
                let client = try startPeer(implementation, "client", path, 0, 0, send: 0, receive: volume, up, down)
                var seconds = 0.0
                for peer in [server, client] {
                    seconds = max(seconds, try await finished(peer))
                    try require(await peer.wait(seconds: 30) == 0, "\(peer.name) exit: \(peer.errorTail)")
                }
                rates[implementation] = Double(volume) / seconds / 1e6
            }
            let c = rates["c"] ?? 0
            let swift = rates["swift"] ?? 0
            lines.append(
                "\(label), \(volume >> 20) MiB: C \(fixed(c)) MB/s, Swift \(fixed(swift)) MB/s (\(fixed(swift / c))x)")
        }
        lines.append(try await proxyWithProxy())
        report.detail(lines.joined(separator: "; "))
    }

    // MARK: - Helpers

    /// Runs `body` and closes `connection` after it, also when it throws; if the watchdog stops the check
    /// meanwhile, its line shows the connection as our side sees it.
    private static func closing(
        _ connection: VchanConnection, _ report: Report, _ body: () async throws -> Void
    ) async throws {
        report.onTimeout { connection.debugDescription }
        do { try await body() } catch {
            await connection.close()
            throw error
        }
        await connection.close()
    }

    /// Runs `body`; a failure quotes `peer`'s stderr (and the peer is killed when dropped).
    private static func quoting(_ peer: SpawnedProcess, _ body: () async throws -> Void) async throws {
        do { try await body() } catch { throw CheckFailure("\(error) [\(peer.name): \(peer.errorTail)]") }
    }

    private static func withEnvironment(_ body: (VchanEnvironment) async throws -> Void) async throws {
        let xenstore = try await XenStoreClient.make()
        do {
            try await body(try VchanEnvironment.xen(xenstore: xenstore))
        } catch {
            await xenstore.close()
            throw error
        }
        await xenstore.close()
    }

    private static func startPeer(
        _ implementation: String, _ role: String, _ path: String, _ read: Int, _ write: Int, send: Int, receive: Int,
        _ outgoing: VchanPattern, _ incoming: VchanPattern
    ) throws(CheckFailure) -> SpawnedProcess {
        let argv = [
            "/proc/self/exe", "vchan-peer", implementation, role, "0", path, "\(read)", "\(write)", "\(send)",
            "\(receive)", "\(outgoing.seed)", "\(incoming.seed)",
        ]
        return try SpawnedProcess(argv, name: "vchan-\(implementation)-\(role)")
    }

    /// Waits for a peer's `OK <seconds>` (after its progress lines) and returns the seconds.
    private static func finished(_ peer: SpawnedProcess) async throws -> Double {
        while true {
            let line = try await peer.readLine(seconds: 200)
            if line == "CONNECTED" || line == "PUBLISHED" { continue }
            guard line.hasPrefix("OK "), let seconds = Double(line.dropFirst(3)) else {
                throw CheckFailure("\(peer.name): \(line) \(peer.errorTail)")
            }
            return seconds
        }
    }

    private static func expectLine(_ peer: SpawnedProcess, _ expected: String) async throws {
        let line = try await peer.readLine(seconds: 60)
        try require(line == expected, "\(peer.name) said \(line) (expected \(expected)) \(peer.errorTail)")
    }

    /// Our end sends `outgoing` into the proxy's vchan and checks `incoming` from it, while the runner feeds
    /// the proxy's stdin with `incoming` and checks its stdout against `outgoing`.
    private static func exchangeThroughProxy(
        _ connection: VchanConnection, _ peer: SpawnedProcess, outgoing: VchanPattern, incoming: VchanPattern
    ) async throws -> Double {
        let fd = (input: peer.inputDescriptor, output: peer.output)
        async let fed = feedPipe(fd.input, count: volume, pattern: incoming)
        async let drained = drainPipe(fd.output, count: volume, pattern: outgoing)
        let seconds: Double
        do {
            seconds = try await timedExchange(connection, outgoing: outgoing, incoming: incoming)
        } catch {
            // The pipe threads may be blocked on the proxy: end it, or leaving this scope (which awaits the
            // `async let`s) would hang the check past its own time limit.
            peer.send(SIGKILL)
            throw error
        }
        let (written, read) = await (fed, drained)
        try require(written == volume, "fed \(written) bytes to the proxy")
        try require(read == volume, "the proxy printed \(read) good bytes")
        return seconds
    }

    /// `exchange` of 16 MiB each way within 200 s; a failure quotes the shared page as our side sees it.
    private static func timedExchange(
        _ connection: VchanConnection, outgoing: VchanPattern, incoming: VchanPattern
    ) async throws -> Double {
        do {
            return try await within(200, "16 MiB each way") {
                try await exchange(connection, send: volume, outgoing: outgoing, receive: volume, incoming: incoming)
            }
        } catch {
            let xen = await xenPortStates(connection.localPort.rawValue)
            throw CheckFailure("\(error) [\(connection.debugDescription)] [\(xen)]")
        }
    }

    private static func expectPeerClosed(_ connection: VchanConnection) async throws {
        do {
            _ = try await within(30, "the peer's close") { try await connection.read() }
            throw CheckFailure("bytes after the end")
        } catch let error as VchanError {
            try require(error == .peerClosed, "read ended with \(error)")
        }
    }

    /// Writes `count` bytes of `pattern` to `fd`; returns how many went through (less when the reader died).
    private static func feedPipe(_ fd: Int32, count: Int, pattern: VchanPattern) async -> Int {
        await blocking {
            var offset = 0
            while offset < count {
                let chunk = pattern.window(at: offset, count: min(65536, count - offset))
                let written = write(fd, chunk.pointer, chunk.count)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { break }
                offset += written
            }
            return offset
        }
    }

    /// Reads up to `count` bytes from `fd`, checking them against `pattern`; returns how many matched.
    private static func drainPipe(_ fd: Int32, count: Int, pattern: VchanPattern) async -> Int {
        await blocking {
            let buffer = PageBuffer(pages: 16)
            var offset = 0
            while offset < count {
                let got = read(fd, buffer.pointer, min(buffer.count, count - offset))
                if got < 0 && errno == EINTR { continue }
                guard got > 0, pattern.matches(buffer.pointer, count: got, at: offset) else { break }
                offset += got
            }
            return offset
        }
    }

    private static func rate(_ bytes: Int, _ seconds: Double) -> String { fixed(Double(bytes) / seconds / 1e6) }

    /// Two decimals.
    private static func fixed(_ value: Double) -> String { "\(Double(Int(value * 100)) / 100)" }
}
