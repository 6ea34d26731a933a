public import EventChannel
public import GrantTable
import Synchronization
public import XenCore
public import XenStoreClient
public import Xenbus

/// The guest side of a Xen PV console: for tests, simulated guests and Swift programs running in a guest.
///
/// The primary console is attached from the page and port the domain builder set up (start info; never
/// zeroed, so earlier boot output survives, mirage PR #18). An extra console `device/console/<devid>` is
/// connected as mirage's `Console_xen` does: wait for the toolstack's device directory, share a zeroed page
/// with the backend, allocate an unbound port, publish `ring-ref`/`port`/`state`, wait for the backend to
/// be `Connected`.
///
/// OCaml: `Console_xen` (mirage-console-xen)
public final class ConsoleFrontend: Sendable {
    /// The console.
    public let id: ConsoleID
    /// The ring engine: our output (`out`) and our input (`in`).
    public let connection: ConsoleConnection
    /// Our end of the event channel.
    public let localPort: EventChannelPort
    private let eventChannel: any EventChannelBackend
    private let store: (any XenbusStore)?
    private let share: SharedPagesHandle?
    private let events: Mutex<Task<Void, Never>?>

    private init(
        id: ConsoleID, ring: ConsoleRing, localPort: EventChannelPort, eventChannel: any EventChannelBackend,
        store: (any XenbusStore)?, share: SharedPagesHandle?
    ) {
        self.id = id
        self.localPort = localPort
        self.eventChannel = eventChannel
        self.store = store
        self.share = share
        let channel = eventChannel
        let connection = ConsoleConnection(ring: ring) { try? channel.notify(localPort) }
        self.connection = connection
        let notifications = eventChannel.notifications(localPort)
        self.events = Mutex(
            Task {
                for await _ in notifications { connection.kick() }
                connection.peerClosed()
            })
    }

    // MARK: - Primary console

    /// Attaches to the primary console from start info: the ring page (as found, not zeroed) and the port.
    ///
    /// OCaml: `Console_xen.connect "0"` (`Xen_os.Start_info` console page and evtchn)
    public convenience init(
        primaryPage page: PageBuffer, port: EventChannelPort, domain: DomainID,
        eventChannel: any EventChannelBackend
    ) throws(ConsoleError) {
        let ring: ConsoleRing
        do throws(ConsoleRingError) { ring = try ConsoleRing(page: page, side: .frontend) } catch {
            throw .protocolViolation(error)
        }
        self.init(
            id: ConsoleID(domain: domain, device: .primary), ring: ring, localPort: port,
            eventChannel: eventChannel, store: nil, share: nil)
    }

    /// Does what the domain builder does for a new guest's primary console, from inside the guest's own
    /// grant table: a fresh ring page (connection byte `DISCONNECTED`) granted to `backend` under the
    /// reserved console grant (ref 0), and an unbound port for `backend`. Publish them with
    /// ``ConsoleToolstack/createPrimary(domain:ring:backend:store:)``.
    ///
    /// C: `xc_dom_gnttab_init` (grant 0) + `xc_dom_console_init` + `xc_evtchn_alloc_unbound`
    public static func buildPrimaryRing(
        grantTable: any GrantTableBackend, eventChannel: any EventChannelBackend, backend: DomainID = .dom0
    ) throws(ConsoleError) -> (page: PageBuffer, info: ConsoleRingInfo) {
        let page = grantTable.allocatePages(1)
        ConsoleRing.initialise(page: page, connection: ConsoleRingLayout.disconnected)
        do throws(GrantTableError) {
            try grantTable.grantAccess(.reservedConsole, to: backend, writable: true, page: page)
        } catch {
            throw .grant(op: "grant_access 0 to dom\(backend)", underlying: error)
        }
        do throws(EventChannelError) {
            let port = try eventChannel.bindUnboundPort(remote: backend)
            return (page, ConsoleRingInfo(ringRef: .reservedConsole, port: port))
        } catch {
            try? grantTable.endAccess(.reservedConsole)
            throw .eventChannel(op: "bind_unbound_port dom\(backend)", underlying: error)
        }
    }

    // MARK: - Extra consoles

    /// Connects extra console `devid` of `domain` (the guest this code runs as): waits for the toolstack's
    /// `device/console/<devid>` directory, shares a zeroed ring page with the backend it names, publishes
    /// `ring-ref`, `port` and `state = Initialised`, waits for the backend's `Connected`, then writes
    /// `Connected`.
    ///
    /// OCaml: `Console_xen.connect id` (for id ≠ "0")
    public static func connect(
        domain: DomainID, devid: UInt32, store: any XenbusStore, gntshr: any GntshrBackend,
        eventChannel: any EventChannelBackend
    ) async throws(ConsoleError) -> ConsoleFrontend {
        let id = ConsoleID(domain: domain, device: .extra(devid))
        let directory = id.frontendPath
        let backendIDPath = "\(directory)/\(ConsoleKeys.backendID)"
        let backendKey = "\(directory)/\(ConsoleKeys.backend)"
        let keys: [String] = try await waitFor(store, path: directory, watching: [directory]) {
            () async throws -> [String]? in
            guard let backendID = try await store.read(backendIDPath) else { return nil }
            guard let backend = try await store.read(backendKey) else { return nil }
            return [backendID, backend]
        }
        let (backendText, backendPath) = (keys[0], keys[1])
        guard let raw = UInt16(backendText.trimmingNUL) else {
            throw .invalidValue(path: backendIDPath, value: backendText)
        }
        let backend = DomainID(raw)
        let share: SharedPagesHandle
        do throws(GrantTableError) {
            share = SharedPagesHandle(try gntshr.sharePages(with: backend, count: 1, writable: true))
        } catch {
            throw .grant(op: "share_pages with dom\(backend)", underlying: error)
        }
        ConsoleRing.initialise(page: share.buffer, connection: ConsoleRingLayout.disconnected)
        let ring: ConsoleRing
        let port: EventChannelPort
        do {
            ring = try ConsoleRing(page: share.buffer, side: .frontend)
            port = try eventChannel.bindUnboundPort(remote: backend)
        } catch {
            try? share.unshare()
            throw .eventChannel(op: "bind_unbound_port dom\(backend)", underlying: error)
        }
        let frontend = ConsoleFrontend(
            id: id, ring: ring, localPort: port, eventChannel: eventChannel, store: store, share: share)
        do {
            let ref = share.refs.first ?? .reservedConsole
            try await store.write([
                ("\(directory)/\(ConsoleKeys.ringRef)", ref.description),
                ("\(directory)/\(ConsoleKeys.port)", port.description),
                ("\(directory)/\(ConsoleKeys.state)", XenbusState.initialised.xenstoreValue),
            ])
        } catch {
            await frontend.close()
            throw .xenstore(op: "transaction", path: directory, underlying: error)
        }
        let backendState = "\(backendPath.trimmingNUL)/\(ConsoleKeys.state)"
        do throws(ConsoleError) {
            _ = try await waitFor(store, path: backendState, watching: [backendState]) { () async throws -> Void? in
                guard let text = try await store.read(backendState) else { return nil }
                return XenbusState(xenstoreValue: text) == .connected ? () : nil
            }
            try await frontend.writeState(.connected)
        } catch {
            await frontend.close()
            throw error
        }
        return frontend
    }

    /// The same connect over a `XenStoreClient`: ``connect(domain:devid:store:gntshr:eventChannel:)`` with
    /// `store: XenStoreBus(client: xenstore)`.
    ///
    /// OCaml: `Console_xen.connect id` (for id ≠ "0")
    public static func connect(
        domain: DomainID, devid: UInt32, xenstore: XenStoreClient, gntshr: any GntshrBackend,
        eventChannel: any EventChannelBackend
    ) async throws(ConsoleError) -> ConsoleFrontend {
        try await connect(
            domain: domain, devid: devid, store: XenStoreBus(client: xenstore), gntshr: gntshr,
            eventChannel: eventChannel)
    }

    // MARK: - Bytes

    /// What the backend types, as an async sequence of chunks.
    ///
    /// OCaml: `Console_xen.read` in a loop
    public var bytes: ConsoleByteStream { connection.bytes }

    /// Waits for input from the backend and returns it.
    ///
    /// OCaml: `Console_xen.read`
    public func read() async throws(ConsoleError) -> [UInt8] { try await connection.read() }

    /// Prints `bytes`, waiting while the ring is full (never dropping).
    ///
    /// OCaml: `Console_xen.write`
    public func write(_ bytes: some Collection<UInt8>) async throws(ConsoleError) {
        try await connection.write(bytes)
    }

    /// Whether the backend marked the ring serviced (Xen 4.21 `connection` byte; zero on older toolstacks).
    ///
    /// OCaml: none (Linux `hvc_xen` checks `XENCONSOLE_DISCONNECTED`)
    public var isBackendConnected: Bool {
        connection.ringConnectionFlag != ConsoleRingLayout.disconnected
    }

    // MARK: - Closing

    /// Closes the console: `state = Closed` (extra consoles), the port unbound, the event task joined, then
    /// the page unshared (gntshr revokes it once the backend unmapped; the connection let go of the ring
    /// first, so no view of the page outlives the share). What was already in the ring is still drained by
    /// the backend.
    ///
    /// OCaml: `Console_xen.disconnect`
    public func close() async {
        let task = events.withLock { task in
            defer { task = nil }
            return task
        }
        guard let task else { return }
        connection.close()
        if store != nil { try? await writeState(.closed) }
        task.cancel()
        if share != nil { try? eventChannel.unbind(localPort) }
        await task.value
        try? share?.unshare()
    }

    private func writeState(_ state: XenbusState) async throws(ConsoleError) {
        guard let store else { return }
        let path = "\(id.frontendPath)/\(ConsoleKeys.state)"
        do {
            try await store.write(path, state.xenstoreValue)
        } catch {
            throw .xenstore(op: "write", path: path, underlying: error)
        }
    }

    /// Waits until `check` returns a value, re-running it whenever something under `paths` changes.
    private static func waitFor<T: Sendable>(
        _ store: any XenbusStore, path: String, watching paths: [String],
        _ check: @escaping @Sendable () async throws -> T?
    ) async throws(ConsoleError) -> T {
        do {
            return try await store.wait(watching: paths, until: check)
        } catch is CancellationError {
            throw .cancelled
        } catch {
            throw .xenstore(op: "wait", path: path, underlying: error)
        }
    }
}
