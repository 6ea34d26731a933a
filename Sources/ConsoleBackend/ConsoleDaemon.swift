public import CoreMetrics
public import EventChannel
public import GrantTable
public import Logging
public import XenCore
public import XenStoreClient
public import Xenbus

/// What happened to a console the daemon follows.
///
/// OCaml: none (xenconsoled logs these)
public enum ConsoleDaemonEvent: Sendable {
    /// A console was connected; its session gives the byte stream and the write function (drive it yourself
    /// when the sink factory returned nil).
    case attached(ConsoleBackSession)
    /// A console went away: `reason` is nil for an orderly end (frontend closed, device or domain removed),
    /// else why it was disconnected (a protocol violation, a failed mapping, a sink failure).
    case detached(ConsoleID, reason: ConsoleError?)
}

/// Serves every console of every guest, as xenconsoled does: follows `@introduceDomain` and
/// `@releaseDomain`, and for each domain under `/local/domain` its primary console (`console`, skipped when
/// `type` names another daemon) and its extra consoles (`device/console/<devid>` whose `backend-id` is
/// this domain). Each console gets its own ``ConsoleBack`` session and sink; one console failing (a guest
/// breaking the ring protocol) disconnects that console only, and it is not retried until its domain goes.
///
/// OCaml: none in mirage (Conback has no discovery); C: xenconsoled `enum_domains`, `watch_domain`,
/// `domain_create_ring`
public actor ConsoleDaemon {
    /// Chooses the sink for a newly connected console (nil: expose it only through ``events``).
    public typealias SinkFactory = @Sendable (ConsoleID) async throws(ConsoleError) -> (any ConsoleSink)?

    private let store: any XenbusStore
    private let grantTable: any GrantTableBackend
    private let eventChannel: any EventChannelBackend
    private let backendDomain: DomainID
    private let makeSink: SinkFactory
    private let logger: Logger
    private let metricsFactory: (any MetricsFactory)?
    private let eventContinuation: AsyncStream<ConsoleDaemonEvent>.Continuation
    /// Attach and detach events, in order.
    public nonisolated let events: AsyncStream<ConsoleDaemonEvent>

    private struct Served {
        var task: Task<Void, Never>
        var session: ConsoleBackSession?
    }
    private var domainWatchers: [DomainID: Task<Void, Never>] = [:]
    private var consoles: [ConsoleID: Served] = [:]
    private var failed: Set<ConsoleID> = []

    /// A daemon in `backendDomain` using a privileged xenstore connection (`store`) and this domain's grant
    /// table and event channels. Each console's ``ConsoleBack`` logs through `logger` and counts in
    /// `metricsFactory` (see ``ConsoleBack/init(id:store:grantTable:eventChannel:backendDomain:logger:metricsFactory:)``).
    ///
    /// C: xenconsoled start-up (`xs_open`, `xengnttab_open`, `xenevtchn_open`)
    public init(
        store: any XenbusStore, grantTable: any GrantTableBackend, eventChannel: any EventChannelBackend,
        backendDomain: DomainID = .dom0, logger: Logger = Logger(label: "swiftxen.console.backend"),
        metricsFactory: (any MetricsFactory)? = nil, sink: @escaping SinkFactory
    ) {
        self.store = store
        self.grantTable = grantTable
        self.eventChannel = eventChannel
        self.backendDomain = backendDomain
        self.makeSink = sink
        self.logger = logger
        self.metricsFactory = metricsFactory
        (events, eventContinuation) = AsyncStream.makeStream(bufferingPolicy: .unbounded)
    }

    /// The same daemon over a `XenStoreClient`: the seam initialiser with `store: XenStoreBus(client: xenstore)`
    /// (``init(store:grantTable:eventChannel:backendDomain:logger:metricsFactory:sink:)``).
    ///
    /// C: xenconsoled start-up (`xs_open`, `xengnttab_open`, `xenevtchn_open`)
    public init(
        xenstore: XenStoreClient, grantTable: any GrantTableBackend, eventChannel: any EventChannelBackend,
        backendDomain: DomainID = .dom0, logger: Logger = Logger(label: "swiftxen.console.backend"),
        metricsFactory: (any MetricsFactory)? = nil, sink: @escaping SinkFactory
    ) {
        self.init(
            store: XenStoreBus(client: xenstore), grantTable: grantTable, eventChannel: eventChannel,
            backendDomain: backendDomain, logger: logger, metricsFactory: metricsFactory, sink: sink)
    }

    /// The consoles currently connected or being connected.
    public var servedConsoles: [ConsoleID] { consoles.keys.sorted() }

    /// The consoles disconnected for an error (not retried while their domain lives).
    public var failedConsoles: [ConsoleID] { failed.sorted() }

    // MARK: - Running

    /// Follows domains until the task is cancelled (or xenstore is lost), then disconnects every console.
    ///
    /// C: xenconsoled `handle_io` loop
    public func run() async throws(ConsoleError) {
        let changes: AsyncThrowingStream<String, any Error>
        do {
            changes = try await store.watch(["@introduceDomain", "@releaseDomain"])
        } catch {
            throw .xenstore(op: "watch", path: "@introduceDomain", underlying: error)
        }
        // Each watch fires once on registration: that is the initial enumeration.
        do {
            for try await _ in changes { await rescan() }
        } catch {
            // xenstore lost: stop following.
        }
        await stopAll()
        eventContinuation.finish()
    }

    /// Re-reads `/local/domain`: starts following new domains, drops the ones gone.
    ///
    /// C: xenconsoled `enum_domains`
    public func rescan() async {
        let listed: [String]
        do {
            listed = try await store.directory(XenStorePath.domainsRoot)
        } catch {
            return
        }
        let own = backendDomain
        let present = Set(listed.compactMap { UInt16($0) }.map { DomainID($0) }.filter { $0 != own })
        for domain in present where domainWatchers[domain] == nil {
            domainWatchers[domain] = Task { await self.followDomain(domain) }
        }
        for domain in domainWatchers.keys where !present.contains(domain) {
            domainWatchers.removeValue(forKey: domain)?.cancel()
            dropDomain(domain)
        }
    }

    // MARK: - One domain

    /// Watches the domain's console nodes and rescans them on every change.
    private func followDomain(_ domain: DomainID) async {
        let base = XenStorePath.domainPath(of: domain)
        do {
            let changes = try await store.watch(["\(base)/console", "\(base)/device/console"])
            for try await _ in changes { await scanDomain(domain) }
        } catch {
            return
        }
    }

    /// Starts serving the domain's consoles that are ready and not yet served; stops devices removed.
    private func scanDomain(_ domain: DomainID) async {
        guard domainWatchers[domain] != nil else { return }
        let base = XenStorePath.domainPath(of: domain)
        let primary = ConsoleID(domain: domain, device: .primary)
        if consoles[primary] == nil, !failed.contains(primary) {
            let ready = await readOptional("\(base)/console/\(ConsoleKeys.ringRef)") != nil
            let type = await readOptional("\(base)/console/\(ConsoleKeys.type)")
            if ready, type == nil || type == "xenconsoled" { serve(primary) }
        }
        let devids = await list("\(base)/device/console").compactMap { UInt32($0) }
        for devid in devids {
            let id = ConsoleID(domain: domain, device: .extra(devid))
            guard consoles[id] == nil, !failed.contains(id) else { continue }
            let backendID = await readOptional("\(id.frontendPath)/\(ConsoleKeys.backendID)")
            let type = await readOptional("\(id.frontendPath)/\(ConsoleKeys.type)")
            guard backendID == String(backendDomain.rawValue), type != "ioemu" else { continue }
            serve(id)
        }
        let listed = Set(devids)
        for (id, served) in consoles where id.domain == domain {
            guard case .extra(let devid) = id.device, !listed.contains(devid) else { continue }
            stop(id, served)
        }
    }

    private func dropDomain(_ domain: DomainID) {
        for (id, served) in consoles where id.domain == domain { stop(id, served) }
        failed = failed.filter { $0.domain != domain }
    }

    /// A departed console drains what is left (session) or stops waiting for its frontend (no session).
    private func stop(_ id: ConsoleID, _ served: Served) {
        if let session = served.session {
            session.connection.peerClosed()
        } else {
            served.task.cancel()
        }
    }

    private func stopAll() async {
        for watcher in domainWatchers.values { watcher.cancel() }
        domainWatchers.removeAll()
        let all = consoles
        for (id, served) in all { stop(id, served) }
        for served in all.values { await served.task.value }
    }

    // MARK: - One console

    private func serve(_ id: ConsoleID) {
        // Re-checked here: scans interleave at their xenstore reads (actor reentrancy).
        guard consoles[id] == nil, !failed.contains(id), domainWatchers[id.domain] != nil else { return }
        let back = ConsoleBack(
            id: id, store: store, grantTable: grantTable, eventChannel: eventChannel,
            backendDomain: backendDomain, logger: logger, metricsFactory: metricsFactory)
        let task = Task { await self.runConsole(back) }
        consoles[id] = Served(task: task, session: nil)
    }

    private func runConsole(_ back: ConsoleBack) async {
        let id = back.id
        let session: ConsoleBackSession
        do throws(ConsoleError) {
            session = try await back.connect()
        } catch {
            finished(id, reason: error, session: nil)
            return
        }
        consoles[id]?.session = session
        eventContinuation.yield(.attached(session))
        var reason: ConsoleError?
        do throws(ConsoleError) {
            if let sink = try await makeSink(id) {
                if let tty = sink.ttyPath { try? await session.publishTTY(tty) }
                try await sink.serve(session.connection)
            } else {
                let ended = await session.closed()
                if case .protocolViolation = ended { reason = ended }
            }
        } catch {
            reason = error
        }
        if reason == nil, case .protocolViolation = session.connection.failure {
            reason = session.connection.failure
        }
        await session.close()
        finished(id, reason: reason, session: session)
    }

    private func finished(_ id: ConsoleID, reason: ConsoleError?, session: ConsoleBackSession?) {
        consoles.removeValue(forKey: id)
        if let reason {
            switch reason {
            case .cancelled, .closed: break
            default: failed.insert(id)
            }
        }
        let orderly: Bool
        switch reason {
        case nil, .cancelled?, .closed?: orderly = true
        default: orderly = false
        }
        // A console that never connected and was simply cancelled is not news.
        if session != nil || !orderly {
            eventContinuation.yield(.detached(id, reason: orderly ? nil : reason))
        }
    }

    // MARK: - Xenstore helpers

    private func readOptional(_ path: String) async -> String? {
        (try? await store.read(path)) ?? nil
    }

    private func list(_ path: String) async -> [String] {
        (try? await store.directory(path)) ?? []
    }
}
