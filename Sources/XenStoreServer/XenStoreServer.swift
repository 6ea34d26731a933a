public import Logging
import Synchronization
public import XenCore
public import XenStoreProtocol

/// An in-memory xenstored with the semantics of C xenstored 4.17: the "mock xenstore" unit tests, the
/// simulated hypervisor and the demo run against. Clients reach it through in-process connections
/// (`connect(domain:)`, any domid, no sockets) or a unix socket (`listen(unixSocketPath:)`, domain 0 as in
/// C xenstored), so the stock `xenstore-*` tools work with `XENSTORED_PATH` pointing at it.
///
/// Every request is handled synchronously under one lock by a pure state machine; replies and watch
/// events are queued per connection in production order and delivered after the lock is released.
///
/// OCaml: `Xs_server.Server` of the `xenstore.server` library (oxenstored in-process)
public final class XenStoreServer: Sendable {
    private let state: Mutex<XenStoreState>
    /// Where `CONTROL print` output and protocol complaints go.
    public let logger: Logger

    /// A server holding only `/`, with dom0 introduced.
    ///
    /// OCaml: `Xs_server.Server.serve_forever` set-up (`Store.create`)
    public init(quotas: XenStoreQuotas = XenStoreQuotas(), logger: Logger = Logger(label: "swiftxen.xenstored")) {
        self.state = Mutex(XenStoreState(quotas: quotas))
        self.logger = logger
    }

    // MARK: - Connections

    /// A new in-process connection acting as `domain`; it is a `XenStoreTransport`, so a client can speak
    /// the wire protocol over it directly. Relative paths resolve to `/local/domain/<domain>`.
    ///
    /// OCaml: none (`Xs_server` tests call `Call.reply` with a domid)
    public func connect(domain: DomainID = .dom0) -> XenStoreServerConnection {
        let sink = InProcessSink()
        let id = attach(domain: domain, sink: sink)
        return XenStoreServerConnection(server: self, id: id, domain: domain, sink: sink)
    }

    func attach(domain: DomainID, sink: any XenStoreConnectionSink) -> XenStoreConnectionID {
        state.withLock { $0.addConnection(domain: domain, sink: sink) }
    }

    /// Feeds bytes a connection sent.
    func receive(_ bytes: some Sequence<UInt8>, from id: XenStoreConnectionID) {
        update { $0.receive(bytes, from: id) }
    }

    /// Drops a connection with its watches and transactions.
    func disconnect(_ id: XenStoreConnectionID) {
        let sink = state.withLock { $0.removeConnection(id) }
        sink?.close()?()
    }

    /// Runs `body` on the state, then delivers what it queued: bytes to each connection's sink (under the
    /// lock, so per-connection order is the production order), wake-ups and log lines after it.
    private func update(_ body: (inout XenStoreState) -> Void) {
        let (actions, lines) = state.withLock { state -> ([@Sendable () -> Void], [String]) in
            body(&state)
            var actions: [@Sendable () -> Void] = []
            for (id, bytes) in state.outbox {
                if let action = state.connections[id]?.sink.enqueue(bytes) { actions.append(action) }
            }
            state.outbox.removeAll(keepingCapacity: true)
            for id in state.closing {
                if let action = state.removeConnection(id)?.close() { actions.append(action) }
            }
            state.closing.removeAll()
            let lines = state.log
            state.log.removeAll()
            return (actions, lines)
        }
        for action in actions { action() }
        for line in lines { logger.info("\(line)") }
    }

    /// Open connections (in-process and socket).
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    // MARK: - Domains (for the toolstack side of tests and the simulated hypervisor)

    /// Marks `domain` introduced, as `XS_INTRODUCE` from dom0 does; fires `@introduceDomain` the first time.
    ///
    /// OCaml: `Xs_client_lwt.S.introduce` (server side)
    public func introduceDomain(_ domain: DomainID, gfn: Int64 = 0, port: EventChannelPort = 0) {
        update { $0.introduce(domain, gfn: gfn, port: port) }
    }

    /// Forgets `domain`, as `XS_RELEASE` does, and fires `@releaseDomain`; false if it was not introduced
    /// (or is dom0).
    ///
    /// OCaml: none in the client (xenstored `do_release`)
    @discardableResult
    public func releaseDomain(_ domain: DomainID) -> Bool {
        var released = false
        update { state in released = (try? state.release(domain)) != nil }
        return released
    }

    /// True if `domain` is introduced (dom0 always is).
    ///
    /// OCaml: none (xenstored `do_is_domain_introduced`)
    public func isDomainIntroduced(_ domain: DomainID) -> Bool { state.withLock { $0.domains[domain] != nil } }

    // MARK: - Direct inspection (as dom0, outside any transaction)

    /// The value at an absolute path, nil if there is no such node.
    ///
    /// OCaml: none (oxenstored `Store.read`)
    public func value(at path: String) -> [UInt8]? { state.withLock { $0.tree[path]?.value } }

    /// The children of an absolute path in listing order, nil if there is no such node.
    ///
    /// OCaml: none (oxenstored `Store.ls`)
    public func children(of path: String) -> [String]? { state.withLock { $0.tree[path]?.children } }

    /// The permissions of an absolute path, nil if there is no such node.
    ///
    /// OCaml: none (oxenstored `Store.getperms`)
    public func permissions(at path: String) -> XenStorePermissions? {
        state.withLock { $0.tree[path]?.permissions }
    }

    /// Nodes in the tree, the root included.
    public var nodeCount: Int { state.withLock { $0.tree.nodes.count } }

    /// Runs xenstored's consistency check (`CONTROL check`); the problems found, empty if none.
    ///
    /// OCaml: none (xenstored `check_store`)
    public func check() -> [String] { state.withLock { $0.tree.check() } }
}
