import BlockBack
import BlockDevice
import ConsoleBackend
import EventChannel
import GrantTable
import XenCore
import XenStoreClient
import Xenbus

/// What every test guest of the tier needs around `xl create` (the `domu` and `domunet` groups): dom0's
/// xenstore nodes, our console daemon in place of xenconsoled, the paused domain, its primary console's pty,
/// and the wait for Xen to free it.
enum GuestToolstack {
    static let xl = "/usr/sbin/xl"

    /// ``prepare()``, a xenstore connection, our console daemon (``startConsoles(client:into:)``), then
    /// `xl create -p` of `config`: the session of a paused guest. Whatever was started is stopped again if a
    /// step fails.
    static func start(config: String, name: String) async throws -> GuestSession {
        try await prepare()
        var session = GuestSession()
        session.client = try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
        do {
            let (daemon, running) = try startConsoles(
                client: try unwrap(session.client, "no xenstore client"), into: session.consoles)
            session.daemon = daemon
            session.tasks = running
            session.domain = try await createPaused(config: config, name: name)
        } catch {
            await session.close()
            throw error
        }
        return session
    }

    /// What xencommons leaves for libxl (dom0's name and domid, /local/pool/<id>/name), written again: an
    /// earlier group may have removed it (the conversation replay's `RM /` succeeds on oxenstored). Ours
    /// replaces xenconsoled: none may be running.
    static func prepare() async throws {
        try await ChildProcess.checked(["/usr/sbin/xen-init-dom0"], seconds: 60)
        let consoled = DomUChecks.processes(named: "xenconsoled")
        try require(consoled.isEmpty, "xenconsoled is running (pids \(consoled))")
    }

    /// Our console daemon, up before the domain exists as xenconsoled would be, serving every console on a
    /// pty; its events go to `consoles`. Returns the daemon and the two tasks running it.
    static func startConsoles(
        client: XenStoreClient, into consoles: ConsoleEvents
    ) throws -> (ConsoleDaemon, [Task<Void, Never>]) {
        let daemon = ConsoleDaemon(
            xenstore: client, grantTable: GuardedGrantTable.wrap(try XenGrantTable(), label: "console"),
            eventChannel: try XenEventChannel()
        ) { _ throws(ConsoleError) in try PtyConsoleSink() }
        let running = Task<Void, Never> { try? await daemon.run() }
        let following = Task {
            for await event in daemon.events {
                switch event {
                case .attached(let session): consoles.attached.withLock { $0[session.id] = session }
                case .detached(let id, let reason): consoles.detached.withLock { $0.append((id, reason)) }
                }
            }
        }
        return (daemon, [running, following])
    }

    /// `xl create -p -e config`, then the new domain's id from `xl domid name`.
    static func createPaused(config: String, name: String) async throws -> DomainID {
        let created = try await ChildProcess.run([xl, "create", "-p", "-e", config], seconds: 120)
        try require(created.status == 0 && !created.timedOut, "xl create: \(created)")
        let domid = try await ChildProcess.checked([xl, "domid", name], seconds: 30)
        let id = try unwrap(
            UInt16(domid.split(whereSeparator: \.isWhitespace).first ?? ""), "xl domid printed \"\(domid)\"")
        return DomainID(id)
    }

    /// The primary console's pty (published in `console/tty`: xl create returned only once it was, libxl
    /// waits for it), read as `xl console` would, with the guest's `XT-DOMU` reports.
    static func openPrimary(
        of domain: DomainID, client: XenStoreClient, consoles: ConsoleEvents
    ) async throws -> (ConsoleBackSession, PtyReader, tty: String) {
        let id = ConsoleID(domain: domain, device: .primary)
        let session = try await consoles.session(id, within: 60)
        let ttyKey = "\(id.frontendPath)/\(ConsoleKeys.tty)"
        let tty = try await client.immediate { handle in try await handle.read(ttyKey) }
        return (session, try PtyReader(path: tty, marker: "XT-DOMU"), tty)
    }

    /// Serves the vbd `nodes` from the file at `path` with our BlockBack: one `BlockBack.serve` per frontend
    /// connection (a guest reloading its driver connects again) until the toolstack takes the vbd offline. The
    /// task answers how many connections it served.
    static func serveFile(
        _ path: String, nodes: VirtualBlockDeviceNodes, client: XenStoreClient, grants: any GrantTableBackend,
        events: any EventChannelBackend
    ) throws -> Task<Int, any Error> {
        let disk = try FileBlockDevice(path: path)
        let bus = XenStoreBus(client: client)
        return Task {
            var served = 0
            while try await nodes.isOnline(in: bus) {
                try await BlockBack.serve(
                    disk, backendPath: nodes.backendPath, store: bus, grants: grants, events: events,
                    options: BlockBackOptions(domain: .dom0))
                served += 1
            }
            await disk.disconnect()
            return served
        }
    }

    /// Waits until `domain` has left `xl list`: Xen frees it only once every grant of it is unmapped.
    static func waitUntilGone(_ domain: DomainID) async throws {
        try await within(60, "domain \(domain) to disappear (mappings released)") {
            while true {
                let listed = try await ChildProcess.run([xl, "list"], seconds: 30)
                let ids = listed.output.split(separator: "\n").dropFirst().compactMap {
                    $0.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { UInt16($0) }
                }
                if listed.status == 0, !ids.contains(domain.rawValue) { return }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// Waits until the console daemon reported `device` of `domain` detached, and fails if it detached with an
    /// error.
    static func waitDetached(_ device: ConsoleDevice, of domain: DomainID, consoles: ConsoleEvents) async throws {
        let id = ConsoleID(domain: domain, device: device)
        let reason = try await Poll.poll(60, "ConsoleDaemon to detach \(id)") {
            consoles.detached.withLock { $0.first { $0.0 == id } }.map { "\($0.1.map { "\($0)" } ?? "")" }
        }
        try require(reason.isEmpty, "\(id) detached with \(reason)")
    }
}

/// The toolstack side of one test guest, kept by its group's actor (``DomU``, ``DomUNet``): the domain, the
/// xenstore connection, our console daemon with its tasks and what it reported, the primary console's pty, and
/// when the session started.
struct GuestSession: Sendable {
    var domain: DomainID?
    var client: XenStoreClient?
    var daemon: ConsoleDaemon?
    var tasks: [Task<Void, Never>] = []
    let consoles = ConsoleEvents()
    /// The primary console's pty, read as `xl console` would.
    var primary: PtyReader?
    let started = ContinuousClock.now

    /// Seconds since the session started, for the check details.
    func elapsed() -> String { "\((ContinuousClock.now - started).components.seconds)s" }

    /// What the guest printed on its primary console.
    var transcript: ConsoleTranscript {
        get throws { try unwrap(primary?.transcript, "the primary console was never opened") }
    }

    /// Types `command` (prefixed with `id`) on the guest's primary console and returns the text of its answer,
    /// the report line "XT-DOMU `id` ...".
    func ask(_ id: String, _ command: String, seconds: Int) async throws -> String {
        try unwrap(primary, "no console").type("\(id) \(command)\n")
        return try await transcript.wait(for: "\(id) ", seconds: seconds)
    }

    /// The domain's primary console as `xl console` reads it, opened through our ConsoleDaemon: the session,
    /// the reader (the caller keeps it as ``primary``) and the pty's path.
    func openPrimary() async throws -> (session: ConsoleBackSession, reader: PtyReader, tty: String) {
        try await GuestToolstack.openPrimary(
            of: try unwrap(domain, "no domain (xl create failed)"), client: try unwrap(client, "no xenstore client"),
            consoles: consoles)
    }

    /// Unpauses the domain and waits until the guest's runner prints `up`, and `ready` when `ready` is set (the
    /// primary console must be open); returns the transcript for what the guest prints next.
    @discardableResult
    func unpause(untilReady ready: Bool = true) async throws -> ConsoleTranscript {
        let domain = try unwrap(domain, "no domain (xl create failed)")
        try await ChildProcess.checked([GuestToolstack.xl, "unpause", "\(domain)"], seconds: 30)
        let transcript = try transcript
        _ = try await transcript.wait(for: "up", seconds: 240)
        if ready { _ = try await transcript.wait(for: "ready", seconds: 120) }
        return transcript
    }

    /// `xl destroy` of the domain, if it still exists (best effort).
    func destroyDomain() async {
        if let domain { _ = try? await ChildProcess.run([GuestToolstack.xl, "destroy", "\(domain)"], seconds: 60) }
    }

    /// Stops the console daemon's tasks, closes the pty and the xenstore connection.
    func close() async {
        for task in tasks { task.cancel() }
        await primary?.close()
        await client?.close()
    }
}
