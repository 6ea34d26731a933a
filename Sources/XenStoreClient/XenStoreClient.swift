public import Logging
import Synchronization
@_exported public import XenStoreProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A multiplexing xenstore client: any number of tasks share one connection; requests carry distinct
/// req_ids and are matched to replies as they arrive (in any order), watch events are routed by token.
/// Requests are batched into as few writes as possible and one reader task parses replies, so 64 requests in
/// flight cost barely more than one.
///
/// Work is done through a `XenStoreHandle` given to a closure: `immediate` (single operations; or
/// `immediateHandle` without a closure), `transaction` (retried on conflict) or `wait` (re-run when what it
/// read changes).
///
/// ```swift
/// let client = try await XenStoreClient.make()
/// let name = try await client.immediate { try await $0.read("name") }
/// try await client.transaction { h in try await h.write("a", "1"); try await h.write("b", "2") }
/// let ring = try await client.wait { h in
///     guard try await h.read("backend/state") == "4" else { throw XenStoreError.again }
///     return try await h.read("ring-ref")
/// }
/// ```
///
/// In tests, connect to an in-process `XenStoreServer` as any domain with
/// `XenStoreClient(transport: server.connect(domain: 5))` (its in-process connection is a `XenStoreTransport`).
///
/// OCaml: `Xs_client_lwt.S.client` (`Xs_client_lwt.Client(IO)`)
public final class XenStoreClient: Sendable {
    let state: Mutex<MultiplexerState>
    /// `state`'s request count, readable without the lock.
    let inFlight = InFlightGauge()
    let transport: Mutex<(connection: UInt64, transport: any XenStoreTransport)>
    let reconnect: (@Sendable () async throws(XenStoreError) -> any XenStoreTransport)?
    /// The retry policy `transaction` uses unless given another.
    public let retryPolicy: XenStoreRetryPolicy
    let logger: Logger

    /// A client over an open transport; starts its reader at once. `reconnect`, if given, opens a fresh
    /// transport for `resume()` (without it `resume()` keeps the current connection).
    ///
    /// OCaml: `Xs_client_lwt.S.make` (over an already created `IO` channel)
    public init(
        transport: any XenStoreTransport,
        retryPolicy: XenStoreRetryPolicy = .default,
        reconnect: (@Sendable () async throws(XenStoreError) -> any XenStoreTransport)? = nil,
        logger: Logger = Logger(label: "swiftxen.xenstore.client")
    ) {
        self.state = Mutex(MultiplexerState())
        self.transport = Mutex((0, transport))
        self.reconnect = reconnect
        self.retryPolicy = retryPolicy
        self.logger = logger
        startReader(transport, connection: 0)
    }

    /// Connects the way libxenstore's `xs_open` does: the xenstored unix socket (`XENSTORED_PATH`, else
    /// `XENSTORED_RUNDIR/socket`, else `/var/run/xenstored/socket`), falling back to the xenbus device
    /// (`XENSTORED_PATH`, else `/dev/xen/xenbus`, else `/proc/xen/xenbus`). `resume()` reconnects the same way.
    ///
    /// OCaml: `Xs_client_lwt.S.make`
    public static func make(
        retryPolicy: XenStoreRetryPolicy = .default,
        logger: Logger = Logger(label: "swiftxen.xenstore.client")
    ) async throws(XenStoreError) -> XenStoreClient {
        let opener: @Sendable () async throws(XenStoreError) -> any XenStoreTransport = {
            () async throws(XenStoreError) -> any XenStoreTransport in
            try XenStoreClient.openDefaultTransport()
        }
        return XenStoreClient(
            transport: try await opener(), retryPolicy: retryPolicy, reconnect: opener, logger: logger)
    }

    /// Connects to the xenstored unix socket at `socketPath` (`resume()` reconnects to it).
    ///
    /// OCaml: `Xs_client_lwt.S.make` with `Xs_transport_unix` pointed at a path
    public static func connect(
        socketPath: String,
        retryPolicy: XenStoreRetryPolicy = .default,
        logger: Logger = Logger(label: "swiftxen.xenstore.client")
    ) async throws(XenStoreError) -> XenStoreClient {
        let opener: @Sendable () async throws(XenStoreError) -> any XenStoreTransport = {
            () async throws(XenStoreError) -> any XenStoreTransport in
            try UnixSocketTransport.connect(path: socketPath)
        }
        return XenStoreClient(
            transport: try await opener(), retryPolicy: retryPolicy, reconnect: opener, logger: logger)
    }

    /// libxenstore's choice of connection: the daemon socket if it connects, else the xenbus device. When
    /// neither opens, `.connectionFailed` names the socket with its errno if the socket exists (a daemon that
    /// refused or a socket we may not use), else the device with the device's errno.
    ///
    /// OCaml: none (libxenstore `xs_open`)
    public static func openDefaultTransport(
        environment: [String: String] = XenStoreEnvironment.current()
    ) throws(XenStoreError) -> any XenStoreTransport {
        let socketPath = UnixSocketTransport.defaultPath(environment: environment)
        let socketErrno: Int32
        do {
            return try UnixSocketTransport.connect(path: socketPath)
        } catch {
            socketErrno = connectionErrno(error)
        }
        let devicePath = XenbusDeviceTransport.defaultPath(environment: environment)
        do {
            return try XenbusDeviceTransport.open(path: devicePath)
        } catch {
            if socketErrno != ENOENT { throw XenStoreError.connectionFailed(path: socketPath, errno: socketErrno) }
            throw XenStoreError.connectionFailed(path: devicePath, errno: connectionErrno(error))
        }
    }

    /// The I/O thread of a socket or xenbus-device connection as a task executor (nil in-process). Tasks that
    /// prefer it (`withTaskExecutorPreference(client.executor)`, `group.addTask(executorPreference:)`) are
    /// resumed on the very thread that read their reply, so a round trip costs one thread wake-up, as a
    /// blocking `xs_read` does, instead of two. Keep such tasks' own work short: it runs between that
    /// connection's reads. After `resume` over a new connection, ask again.
    ///
    /// OCaml: none (Lwt runs everything on one thread anyway)
    public var executor: (any TaskExecutor)? {
        (transport.withLock { $0.transport } as? any PushingTransport)?.ioExecutor
    }

    deinit {
        let transport = transport.withLock { $0.transport }
        Task { await transport.close() }
    }

    // MARK: - Access styles

    /// Runs `body` with a handle whose operations are sent one by one, outside any transaction.
    ///
    /// Generic over the body's error: a closure annotated `{ (h) async throws(XenStoreError) in … }` keeps the
    /// typed error. Swift 6 infers an unannotated closure as throwing `any Error`, so for single operations
    /// ``immediateHandle`` keeps it without any annotation.
    ///
    /// OCaml: `Xs_client_lwt.S.immediate`
    public func immediate<T, E: Error>(
        isolation: isolated (any Actor)? = #isolation,
        _ body: (XenStoreHandle) async throws(E) -> T
    ) async throws(E) -> T {
        try await body(immediateHandle)
    }

    /// The handle `immediate` passes to its body (operations outside any transaction), for calls without a
    /// closure: `try await client.immediateHandle.read("name")` throws a typed `XenStoreError` with no
    /// annotation. It may be kept and shared: it holds the client and nothing else.
    ///
    /// OCaml: none (`Xs_client_lwt.S.immediate` passes this handle to a function)
    public var immediateHandle: XenStoreHandle {
        XenStoreHandle(client: self, transactionID: 0, recorder: nil)
    }

    /// Waits for a condition: runs `body`, and while it throws `XenStoreError.again` (or `.eagain`) watches
    /// exactly the paths it read in its last run (adding new ones, removing ones no longer read, so watches
    /// never accumulate) and runs it again when one of them fires. Returns the body's first value; any other
    /// error is rethrown. Cancelling the task removes the watches and throws `CancellationError`; suspending
    /// the client throws `.suspended`, losing the connection `.disconnected`. With a `timeout`, a condition
    /// that still does not hold when it runs out throws `XenStoreError.timedOut(after:)` (a body run in
    /// progress then finishes first); nil, the default, waits as long as it takes, as OCaml does.
    ///
    /// Untyped `throws`: besides the body's errors and `XenStoreError`, a wait throws `CancellationError`,
    /// and a typed throw carries one type.
    ///
    /// OCaml: `Xs_client_lwt.S.wait` (which only ever adds watches, and has no time limit)
    public func wait<T>(
        timeout: Duration? = nil,
        isolation: isolated (any Actor)? = #isolation,
        _ body: (XenStoreHandle) async throws -> T
    ) async throws -> T {
        let signal = WaitSignal()
        // The timer wakes the wait the way an event does; it is cancelled once the wait is over.
        let timer = timeout.map { limit in
            Task {
                try? await Task.sleep(for: limit)
                if !Task.isCancelled { signal.expire() }
            }
        }
        defer { timer?.cancel() }
        let token = state.withLock { state in
            let token = state.makeToken("wait")
            state.addRoute(token, signal, survivesSuspend: false)
            return token
        }
        var watched = WatchedPaths()
        func cleanUp() async {
            state.withLock { $0.removeRoute(token, signal) }
            guard !signal.isFinishedByConnection else { return }
            for path in watched.paths { try? await sendUnwatch(path, token: token) }
        }
        while true {
            if Task.isCancelled {
                await cleanUp()
                throw CancellationError()
            }
            signal.reset()
            let recorder = AccessRecorder()
            do {
                let value = try await body(XenStoreHandle(client: self, transactionID: 0, recorder: recorder))
                await cleanUp()
                return value
            } catch let error as XenStoreError where error.isAgain {
                // The condition does not hold yet: watch what was read, then wait for a change.
            } catch {
                await cleanUp()
                throw error
            }
            let change = watched.adjust(to: recorder.paths)
            do throws(XenStoreError) {
                for path in change.add {
                    try await sendWatch(path, token: token)
                    watched.insert(path)
                }
            } catch {
                await cleanUp()
                throw error
            }
            for path in change.remove {
                try? await sendUnwatch(path, token: token)
                watched.remove(path)
            }
            switch await signal.wait() {
            case .fired: continue
            case .cancelled:
                await cleanUp()
                throw CancellationError()
            case .timedOut:
                await cleanUp()
                throw XenStoreError.timedOut(after: timeout ?? .zero)
            case .finished(let error):
                await cleanUp()
                throw error
            }
        }
    }

    // MARK: - Watches as sequences

    /// Watches `path` and returns its events as an `AsyncSequence` (the first event, for `path` itself,
    /// arrives at once). The watch is registered before this returns and removed (`UNWATCH`) when the
    /// sequence ends: iterating task cancelled, `cancel()` called, or the sequence dropped.
    ///
    /// OCaml: none (`Xs_client_lwt` only has `wait`)
    public func watches(_ path: String) async throws(XenStoreError) -> XenStoreWatchEvents {
        let token = state.withLock { $0.makeToken("watch") }
        let subscription = WatchSubscription(token: token) { [weak self] _ in
            guard let self else { return }
            Task { await self.dropWatch(path, token: token) }
        }
        state.withLock { $0.addRoute(token, subscription, survivesSuspend: false) }
        do throws(XenStoreError) {
            try await sendWatch(path, token: token)
        } catch {
            state.withLock { $0.removeRoute(token, subscription) }
            subscription.finish(error)
            throw error
        }
        return XenStoreWatchEvents(subscription: subscription)
    }

    private func dropWatch(_ path: String, token: String) async {
        let live = state.withLock { state -> Bool in
            let had = state.routes[token] != nil
            state.routes[token] = nil
            return had
        }
        if live { try? await sendUnwatch(path, token: token) }
    }

    /// The events of the manual watches registered with `token` through `XenStoreHandle.watch`, in order.
    /// Subscribe before (or right after) registering; events for a token nobody subscribed to are dropped,
    /// as ocaml-xenstore does. The subscription survives `suspend`/`resume` (the watches are re-registered).
    ///
    /// OCaml: none (libxenstore `xs_read_watch`)
    public func events(token: String) -> XenStoreWatchEvents {
        let subscription = WatchSubscription(token: token) { [weak self] subscription in
            self?.state.withLock { $0.removeRoute(token, subscription) }
        }
        state.withLock { $0.addRoute(token, subscription, survivesSuspend: true) }
        return XenStoreWatchEvents(subscription: subscription)
    }
}
