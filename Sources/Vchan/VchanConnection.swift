import EventChannel
import GrantTable
import Synchronization
public import XenCore
import XenStoreClient

/// One end of an established (or, for a server, published) vchan: a bidirectional byte stream over the
/// shared rings, wire-compatible with libxenvchan.
///
/// Each direction is a `Mutex` around its pure ring (``VchanReceiveRing``, ``VchanSendRing``), so a reader
/// and a writer copy at the same time; callers of one direction take turns in arrival order, so a whole
/// write (or ``read(exactly:)``) is never interleaved with another. Nothing is buffered beyond the rings: a
/// slow reader stops the writer (back-pressure both ways). Waiting follows libxenvchan's notification bits
/// exactly: a side asks for an event before it sleeps and looks again after asking, and signals the peer
/// only when the peer asked.
///
/// The connection owns its shares (server) or mappings (client), its port and its tasks (the event pump,
/// the re-check timer, the peer-domain watch). ``close()`` marks this side exited, signals the peer, joins
/// the tasks, drops every ring view and only then releases the pages (and, for a server, its xenstore
/// entries). A peer that breaks the protocol fails every operation with a typed ``VchanError`` and the
/// connection closes itself.
///
/// OCaml: `Vchan.Endpoint.Make(...).t` (a `Mirage_flow`)
public final class VchanConnection: Sendable {
    /// Which end this is.
    public let role: VchanRole
    /// The other end's domain.
    public let peer: DomainID
    /// The port name of the rendezvous.
    public let port: VchanPort
    /// The ring orders in use.
    public let ringSizes: VchanRingSizes
    /// Our end of the event channel.
    public let localPort: EventChannelPort
    /// The xenstore directory of the rendezvous.
    public let xenstorePath: String
    /// The grant reference of the shared page (what `ring-ref` says).
    public let ringRef: GrantRef

    struct Half<Ring: Sendable>: Sendable {
        var ring: Ring?
        var failure: VchanError?
        var turns = TurnQueue()
        var bytes: UInt64 = 0
        /// The serving caller found nothing to move and sleeps until the next kick.
        var asleep = false
    }

    let options: VchanOptions
    let gate = VchanEventGate()
    let inbound: Mutex<Half<VchanReceiveRing>>
    let outbound: Mutex<Half<VchanSendRing>>
    private let eventChannel: any EventChannelBackend
    private let resources: VchanResources
    private let lifecycle = Mutex<(tasks: [Task<Void, Never>], closing: Task<Void, Never>?)>(([], nil))
    /// Bursts of events received from the peer (for ``debugDescription``).
    let eventsReceived = Atomic<UInt64>(0)
    /// The re-check timer's watch for lost events.
    let lostEvents = Mutex(VchanLostEvents())

    /// Who and where a connection is, as the server or client worked it out.
    struct Endpoint {
        let role: VchanRole
        let peer: DomainID
        let port: VchanPort
        let sizes: VchanRingSizes
        let path: String
        let ringRef: GrantRef
        let localPort: EventChannelPort
    }

    private init(
        _ endpoint: Endpoint, receive: VchanReceiveRing, send: VchanSendRing, eventChannel: any EventChannelBackend,
        resources: VchanResources, options: VchanOptions
    ) {
        self.role = endpoint.role
        self.peer = endpoint.peer
        self.port = endpoint.port
        self.ringSizes = endpoint.sizes
        self.xenstorePath = endpoint.path
        self.ringRef = endpoint.ringRef
        self.localPort = endpoint.localPort
        self.inbound = Mutex(Half(ring: receive))
        self.outbound = Mutex(Half(ring: send))
        self.eventChannel = eventChannel
        self.resources = resources
        self.options = options
    }

    /// Wraps the shared page and the rings' memory (in the page, or the external buffers in grant order:
    /// left's, then right's) into a connection owning `resources`.
    static func assemble(
        _ endpoint: Endpoint, page: PageBuffer, externalRings: [PageBuffer], resources: VchanResources,
        eventChannel: any EventChannelBackend, options: VchanOptions
    ) throws(VchanError) -> VchanConnection {
        let control = VchanControlPage(page: page, role: endpoint.role)
        var external = externalRings.makeIterator()
        func data(_ location: VchanRingLocation, size: Int) -> PageBuffer {
            switch location {
            case .inPage(let offset): page.slice(from: offset, count: size)
            case .external: external.next()!.slice(from: 0, count: size)
            }
        }
        let left = data(endpoint.sizes.left, size: endpoint.sizes.leftSize)
        let right = data(endpoint.sizes.right, size: endpoint.sizes.rightSize)
        // The server reads left and writes right; the client the other way round.
        let (incoming, outgoing) = endpoint.role == .server ? (left, right) : (right, left)
        return VchanConnection(
            endpoint, receive: try VchanReceiveRing(control: control, data: incoming),
            send: try VchanSendRing(control: control, data: outgoing), eventChannel: eventChannel,
            resources: resources, options: options)
    }

    deinit {
        // Dropped without close(): stop the tasks, drop the views, give the pages back while the port is
        // still bound (their unmap notification tells the peer), then unbind; a server's xenstore entries
        // are withdrawn by a last task.
        let tasks = lifecycle.withLock { $0.tasks }
        for task in tasks { task.cancel() }
        inbound.withLock { $0.ring = nil }
        outbound.withLock { $0.ring = nil }
        resources.releasePages()
        try? eventChannel.unbind(localPort)
        let resources = self.resources
        Task { await resources.withdrawEntries() }
    }

    // MARK: - State

    /// The peer's live byte (``VchanLiveState/waitingForConnection`` until a client arrives). Throws
    /// `.invalidLiveState` for a value the protocol does not have.
    ///
    /// OCaml: `Vchan.Endpoint.state`; C: `libxenvchan_is_open`
    public func peerState() throws(VchanError) -> VchanLiveState {
        try inbound.withLock { half throws(VchanError) in
            if let failure = half.failure { throw failure }
            guard let ring = half.ring else { throw .closed }
            return try ring.control.peerState()
        }
    }

    /// Why the connection ended, or nil while it is open.
    public var failure: VchanError? { inbound.withLock { $0.failure } }

    /// Bytes received and sent so far.
    ///
    /// OCaml: none
    public var statistics: (received: UInt64, sent: UInt64) {
        (inbound.withLock { $0.bytes }, outbound.withLock { $0.bytes })
    }

    /// Bytes waiting to be read now (and a request for an event when that changes).
    ///
    /// OCaml: `Vchan.Endpoint.data_ready`; C: `libxenvchan_data_ready`
    public var dataReady: Int {
        inbound.withLock { half in
            half.ring?.control.requestNotify(VchanLayout.notifyWrite)
            return (try? half.ring?.available()) ?? 0
        }
    }

    /// Bytes that could be written now (and a request for an event when that changes).
    ///
    /// OCaml: `Vchan.Endpoint.buffer_space`; C: `libxenvchan_buffer_space`
    public var bufferSpace: Int {
        outbound.withLock { half in
            half.ring?.control.requestNotify(VchanLayout.notifyRead)
            return (try? half.ring?.space()) ?? 0
        }
    }

    // MARK: - Tasks

    /// Starts the event pump, the re-check timer and (for a peer in another domain) the `@releaseDomain`
    /// watch. Called once by the server or client that built the connection.
    func start(xenstore: XenStoreClient, localDomain: DomainID) {
        let gate = self.gate
        let notifications = eventChannel.notifications(localPort)
        var tasks = [
            Task { [weak self] in
                for await _ in notifications {
                    self?.eventsReceived.add(1, ordering: .relaxed)
                    gate.kick()
                }
                // The port went away: ours on close, or the interface under us.
                self?.fail(.eventChannel(op: "notifications", underlying: .closed))
            }
        ]
        // The stall timeout needs wake-ups to be noticed even when nothing else happens.
        let intervals = [options.recheckInterval, options.stallTimeout.map { $0 / 4 }].compactMap { $0 }
        if let interval = intervals.min() {
            let resend = options.recheckInterval != nil
            tasks.append(
                Task { [weak self] in
                    while !Task.isCancelled {
                        do { try await Task.sleep(for: interval) } catch { return }
                        if resend { self?.repeatLostSignal(interval: interval) }
                        gate.kick()
                    }
                })
        }
        if options.watchPeerDomain, peer != localDomain {
            let peer = self.peer
            tasks.append(
                Task { [weak self] in
                    guard await VchanPeerWatch.waitForDeath(of: peer, xenstore: xenstore) else { return }
                    self?.fail(.peerDied(peer))
                })
        }
        lifecycle.withLock { $0.tasks = tasks }
    }

    // MARK: - Failing and closing

    /// Records `error` as the reason (the first one sticks), wakes every waiter and closes in the
    /// background. A no-op once closing.
    func fail(_ error: VchanError) {
        guard lifecycle.withLock({ $0.closing == nil }) else { return }
        record(error)
        Task { await self.close(reason: error) }
    }

    private func record(_ error: VchanError) {
        inbound.withLock { if $0.failure == nil { $0.failure = error } }
        outbound.withLock { if $0.failure == nil { $0.failure = error } }
        gate.kick()
    }

    /// Sends an event to the peer (it asked for one) after a read (`afterRead`: it may write now) or a write
    /// (it may read), and notes the index the peer should move in answer.
    func signalPeer(afterRead: Bool) {
        guard notifyPeer() else { return }
        let index =
            afterRead
            ? inbound.withLock { $0.ring?.cursor.peer } : outbound.withLock { $0.ring?.cursor.peer }
        guard let index else { return }
        lostEvents.withLock { $0.signalled(afterRead: afterRead, peerIndex: index, at: .now) }
    }

    /// Sends an event to the peer; a failure fails the connection (and answers false).
    @discardableResult
    func notifyPeer() -> Bool {
        do throws(EventChannelError) { try eventChannel.notify(localPort) } catch {
            fail(.eventChannel(op: "notify", underlying: error))
            return false
        }
        return true
    }

    /// The re-check timer's look for lost events: sends the last event again when the peer has not answered
    /// it for a whole interval (see ``VchanLostEvents``).
    func repeatLostSignal(interval: Duration) {
        let (producer, readerStuck) = inbound.withLock { half in
            (half.ring?.cursor.peer, half.asleep && ((try? half.ring?.available()) ?? 0) > 0)
        }
        let (consumer, writerStuck) = outbound.withLock { half in
            (half.ring?.cursor.peer, half.asleep && ((try? half.ring?.space()) ?? 0) > 0)
        }
        let again = lostEvents.withLock {
            $0.tick(
                receiveProducer: producer, sendConsumer: consumer, readerStuck: readerStuck,
                writerStuck: writerStuck, now: .now, interval: interval)
        }
        if again { try? eventChannel.notify(localPort) }
    }

    /// Events received; events sent a second time because the peer did not answer the first for a whole
    /// re-check interval; and wake-ups the re-check timer gave our reader (writer) asleep over bytes (room)
    /// that had already come, i.e. incoming events lost or late.
    ///
    /// OCaml: none
    public var eventStatistics: (received: UInt64, resent: UInt64, rescued: UInt64) {
        let (resent, rescued) = lostEvents.withLock { ($0.resent, $0.rescued) }
        return (eventsReceived.load(ordering: .relaxed), resent, rescued)
    }

    /// Closes this end: pending and later operations fail with ``VchanError/closed`` (or the failure that
    /// came first), the peer is told (`exited` in our live byte, then an event) and can still read what we
    /// wrote; then the tasks are joined, the ring views dropped and the pages released. Idempotent;
    /// concurrent callers all wait for the one teardown.
    ///
    /// OCaml: `Vchan.Endpoint.close`; C: `libxenvchan_close`
    public func close() async { await close(reason: .closed) }

    func close(reason: VchanError) async {
        let teardown = lifecycle.withLock { state in
            if let closing = state.closing { return closing }
            let closing = Task { await self.teardown(reason) }
            state.closing = closing
            return closing
        }
        await teardown.value
    }

    private func teardown(_ reason: VchanError) async {
        record(reason)
        inbound.withLock { $0.ring?.control.setOwnState(.exited) }
        try? eventChannel.notify(localPort)
        let tasks = lifecycle.withLock { $0.tasks }
        for task in tasks { task.cancel() }
        try? eventChannel.unbind(localPort)
        for task in tasks { await task.value }
        inbound.withLock { $0.ring = nil }
        outbound.withLock { $0.ring = nil }
        resources.releasePages()
        await resources.withdrawEntries()
    }
}

/// What a connection owns besides its ring views, released once: after its tasks are joined and its views
/// dropped. The shared page goes last (its unmap notification is the peer's last word from us).
///
/// OCaml: `Vchan.Endpoint.server_params` / `client_params`
final class VchanResources: Sendable {
    enum Pages: Sendable {
        case shared(SharedPagesHandle)
        case mapped(GrantMappingHandle)

        func release() {
            switch self {
            case .shared(let handle): try? handle.unshare()
            case .mapped(let handle): try? handle.unmap()
            }
        }
    }

    private let control: Pages
    private let rings: [Pages]
    private let withdraw: (xenstore: XenStoreClient, path: String)?
    private let released = Mutex((pages: false, entries: false))

    init(control: Pages, rings: [Pages], withdraw: (XenStoreClient, String)?) {
        self.control = control
        self.rings = rings
        self.withdraw = withdraw
    }

    /// Unshares or unmaps the rings, then the shared page; once.
    func releasePages() {
        guard
            released.withLock({ state in
                defer { state.pages = true }; return !state.pages
            })
        else { return }
        for ring in rings { ring.release() }
        control.release()
    }

    /// Removes a server's xenstore entries (as `close_xs_srv`, after the pages); once.
    func withdrawEntries() async {
        guard
            released.withLock({ state in
                defer { state.entries = true }; return !state.entries
            })
        else { return }
        if let (xenstore, path) = withdraw { await VchanRendezvous.withdraw(xenstore: xenstore, path: path) }
    }
}
