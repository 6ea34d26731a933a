import BackendTelemetry
public import CoreMetrics
public import EventChannel
public import GrantTable
public import Logging
public import XenCore
public import XenStoreClient
public import Xenbus

/// Bytes moved through one console, both ways.
///
/// OCaml: `Conback.stats`
public struct ConsoleStatistics: Hashable, Sendable {
    /// Bytes the guest printed that the backend took from the ring.
    public var totalRead: UInt64
    /// Bytes the backend put into the guest's input ring.
    public var totalWrite: UInt64

    /// Statistics from their parts.
    public init(totalRead: UInt64, totalWrite: UInt64) {
        self.totalRead = totalRead
        self.totalWrite = totalWrite
    }
}

/// Serves one console of one guest from the backend side, as mirage's Conback does: find the frontend's
/// ring, map it, bind its event channel, announce `Connected`, pump bytes both ways, notice the frontend
/// closing (or the device, or the domain, disappearing) and unmap.
///
/// Extra consoles (`device/console/<devid>`) use the xenbus handshake (backend dir
/// `/local/domain/<be>/backend/console/<fe>/<devid>`). The primary console has no handshake: as xenconsoled
/// does, the backend reads `ring-ref`/`port` from `/local/domain/<id>/console` and maps the reserved console
/// grant (ref 0), falling back to `ring-ref` itself as a grant reference.
///
/// OCaml: `Conback.Make(A)(X)(C)` (`run`, `init`, `service_thread`)
public final class ConsoleBack: Sendable {
    /// The console served.
    public let id: ConsoleID
    /// The domain this backend runs in (the owner of the backend directory).
    public let backendDomain: DomainID
    let store: any XenbusStore
    let grantTable: any GrantTableBackend
    let eventChannel: any EventChannelBackend
    /// The caller's logger with the console's identity as metadata.
    let logger: Logger
    let metrics: ConsoleBackMetrics

    /// A backend for `id`, using `store` (a privileged xenstore connection), and this domain's grant table and
    /// event channels. It logs through `logger` at `debug` only (connect, close, a guest breaking the
    /// protocol: a hostile guest must not flood the log), with metadata `xen.backend` = `console`,
    /// `xen.domain` and `xen.device` (`0` for the primary console, else the devid), and counts in
    /// `metricsFactory` (nil: `MetricsSystem.factory`, read now; the series are listed in the BlockBack
    /// documentation's "Metrics" article).
    ///
    /// OCaml: `Conback.Make` applied, plus `get_my_domid` (here a parameter: 0 unless given)
    public init(
        id: ConsoleID, store: any XenbusStore, grantTable: any GrantTableBackend,
        eventChannel: any EventChannelBackend, backendDomain: DomainID = .dom0,
        logger: Logger = Logger(label: "swiftxen.console.backend"), metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.id = id
        self.store = store
        self.grantTable = grantTable
        self.eventChannel = eventChannel
        self.backendDomain = backendDomain
        let device: String =
            switch id.device {
            case .primary: "0"
            case .extra(let devid): String(devid)
            }
        let telemetry = BackendTelemetry(
            kind: "console", domain: id.domain, device: device, factory: metricsFactory, logger: logger)
        self.logger = telemetry.logger
        self.metrics = ConsoleBackMetrics(telemetry)
    }

    /// The same backend over a `XenStoreClient`: the seam initialiser with `store: XenStoreBus(client: xenstore)`
    /// (``init(id:store:grantTable:eventChannel:backendDomain:logger:metricsFactory:)``).
    ///
    /// OCaml: `Conback.Make` applied to `Xs_client_lwt`
    public convenience init(
        id: ConsoleID, xenstore: XenStoreClient, grantTable: any GrantTableBackend,
        eventChannel: any EventChannelBackend, backendDomain: DomainID = .dom0,
        logger: Logger = Logger(label: "swiftxen.console.backend"), metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.init(
            id: id, store: XenStoreBus(client: xenstore), grantTable: grantTable, eventChannel: eventChannel,
            backendDomain: backendDomain, logger: logger, metricsFactory: metricsFactory)
    }

    // MARK: - Running

    /// Connects, serves the console through `sink` until the frontend goes away, then disconnects and
    /// returns what was moved. Throws the typed reason when the console could not be set up, the guest
    /// broke the ring protocol, or the sink failed; the device is disconnected in every case.
    ///
    /// OCaml: `Conback.Make.run`
    public func run(sink: any ConsoleSink) async throws(ConsoleError) -> ConsoleStatistics {
        let session = try await connect()
        if let tty = sink.ttyPath { try? await session.publishTTY(tty) }
        let outcome: Result<Void, ConsoleError>
        do throws(ConsoleError) {
            try await sink.serve(session.connection)
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        await session.close()
        try outcome.get()
        return session.statistics
    }

    /// Waits for the frontend, maps its ring, binds its port and announces `Connected`. The caller drives
    /// the returned session (its ``ConsoleBackSession/connection``) and closes it.
    ///
    /// OCaml: the first half of `Conback.Make.run` (up to writing state `Connected`) and `init`
    public func connect() async throws(ConsoleError) -> ConsoleBackSession {
        do throws(ConsoleError) {
            let session =
                switch id.device {
                case .primary: try await connectPrimary()
                case .extra: try await connectExtra()
                }
            metrics.connections.increment()
            logger.debug("console connected", metadata: ["frontend": "\(session.frontendPath)"])
            return session
        } catch {
            logger.debug("console connect failed", metadata: ["error": "\(error)"])
            throw error
        }
    }

    // MARK: - Extra consoles (xenbus handshake)

    private func connectExtra() async throws(ConsoleError) -> ConsoleBackSession {
        guard let backendPath = id.backendPath(backend: backendDomain) else { throw .closed }
        let frontendKey = "\(backendPath)/\(ConsoleKeys.frontend)"
        guard let frontendPath = try await readOptional(frontendKey) else { throw .missingKey(path: frontendKey) }
        let statePath = "\(frontendPath)/\(ConsoleKeys.state)"
        // Wait for the frontend to publish its ring (Initialised, or Connected as mirage's frontend writes).
        try await waitUntil(path: statePath, watching: [statePath]) { store in
            guard let text = try await store.read(statePath) else { return false }
            let state = XenbusState(xenstoreValue: text)
            return state == .initialised || state == .connected
        }
        let info = try ConsoleRingInfo(
            directory: frontendPath,
            ringRef: try await readOptional("\(frontendPath)/\(ConsoleKeys.ringRef)"),
            port: try await readOptional("\(frontendPath)/\(ConsoleKeys.port)"))
        let session = try attach(refs: [info.ringRef], port: info.port, frontendPath: frontendPath) {
            store, frontendPath in
            // The frontend is gone when its state says Closed or its directory vanished.
            let frontendState = "\(frontendPath)/\(ConsoleKeys.state)"
            try await store.wait(watching: [frontendState]) { () async throws -> Void? in
                guard let text = try await store.read(frontendState) else { return () }
                return XenbusState(xenstoreValue: text) == .closed ? () : nil
            }
        }
        session.backendStatePath = "\(backendPath)/\(ConsoleKeys.state)"
        do {
            try await store.write("\(backendPath)/\(ConsoleKeys.state)", XenbusState.connected.xenstoreValue)
        } catch {
            await session.close()
            throw .xenstore(op: "write", path: "\(backendPath)/\(ConsoleKeys.state)", underlying: error)
        }
        return session
    }

    // MARK: - Primary console (xenconsoled)

    private func connectPrimary() async throws(ConsoleError) -> ConsoleBackSession {
        let directory = id.frontendPath
        let refPath = "\(directory)/\(ConsoleKeys.ringRef)"
        let portPath = "\(directory)/\(ConsoleKeys.port)"
        // The domain builder writes both before the guest runs; wait in case we are early.
        try await waitUntil(path: directory, watching: [refPath, portPath]) { store in
            guard try await store.read(refPath) != nil else { return false }
            return try await store.read(portPath) != nil
        }
        let info = try ConsoleRingInfo(
            directory: directory, ringRef: try await readOptional(refPath), port: try await readOptional(portPath))
        // xenconsoled maps GNTTAB_RESERVED_CONSOLE first; ring-ref (a frame number there) is the fallback.
        var refs = [GrantRef.reservedConsole]
        if info.ringRef != .reservedConsole { refs.append(info.ringRef) }
        return try attach(refs: refs, port: info.port, frontendPath: directory) { store, directory in
            let ringRef = "\(directory)/\(ConsoleKeys.ringRef)"
            try await store.wait(watching: [ringRef]) { () async throws -> Void? in
                try await store.read(ringRef) == nil ? () : nil
            }
        }
    }

    // MARK: - Mapping and binding

    /// Maps the first of `refs` that maps, binds `port`, adopts the ring and starts the session's tasks.
    private func attach(
        refs: [GrantRef], port: EventChannelPort, frontendPath: String,
        frontendGone: @escaping @Sendable (any XenbusStore, String) async throws -> Void
    ) throws(ConsoleError) -> ConsoleBackSession {
        var mapped: GrantMappingHandle?
        var lastError: GrantTableError?
        for ref in refs where mapped == nil {
            do throws(GrantTableError) {
                mapped = GrantMappingHandle(try grantTable.map(domain: id.domain, ref: ref, writable: true))
            } catch {
                lastError = error
            }
        }
        guard let mapping = mapped else {
            throw .grant(op: "map \(refs) of dom\(id.domain)", underlying: lastError ?? .closed)
        }
        let ring: ConsoleRing
        do throws(ConsoleRingError) {
            ring = try ConsoleRing(page: mapping.buffer, side: .backend)
        } catch {
            try? mapping.unmap()
            metrics.peerDisconnects.increment()
            throw .protocolViolation(error)
        }
        let localPort: EventChannelPort
        do throws(EventChannelError) {
            localPort = try eventChannel.bindInterdomain(remote: id.domain, remotePort: port)
        } catch {
            try? mapping.unmap()
            throw .eventChannel(op: "bind_interdomain dom\(id.domain):\(port)", underlying: error)
        }
        ring.connection = ConsoleRingLayout.connected
        let channel = eventChannel
        let connection = ConsoleConnection(ring: ring, metrics: metrics) { try? channel.notify(localPort) }
        let session = ConsoleBackSession(
            id: id, connection: connection, mapping: mapping, localPort: localPort, eventChannel: eventChannel,
            store: store, frontendPath: frontendPath, logger: logger, metrics: metrics)
        session.start(frontendGone: frontendGone)
        // The guest may be blocked on a full ring or waiting for the connection flag.
        try? channel.notify(localPort)
        return session
    }

    // MARK: - Xenstore helpers

    private func readOptional(_ path: String) async throws(ConsoleError) -> String? {
        do {
            return try await store.read(path)
        } catch {
            throw .xenstore(op: "read", path: path, underlying: error)
        }
    }

    /// Waits until `condition` holds, re-checking it whenever something under `paths` changes.
    private func waitUntil(
        path: String, watching paths: [String],
        _ condition: @escaping @Sendable (any XenbusStore) async throws -> Bool
    ) async throws(ConsoleError) {
        let store = self.store
        do {
            try await store.wait(watching: paths) { () async throws -> Void? in
                try await condition(store) ? () : nil
            }
        } catch is CancellationError {
            throw .cancelled
        } catch {
            throw .xenstore(op: "wait", path: path, underlying: error)
        }
    }
}
