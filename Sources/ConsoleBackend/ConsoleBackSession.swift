import EventChannel
public import GrantTable
import Logging
import Synchronization
public import XenCore
import Xenbus

/// A console the backend has connected: the mapped ring, the bound port and the tasks that feed event
/// kicks in and watch for the frontend leaving. Read the guest's output from ``bytes`` (or
/// ``connection``), type into it with ``write(_:)``, and ``close()`` when done.
///
/// OCaml: `Conback.t` plus the service thread's lifetime
public final class ConsoleBackSession: Sendable {
    /// The console.
    public let id: ConsoleID
    /// The ring engine: the guest's output and the guest's input.
    public let connection: ConsoleConnection
    /// The frontend directory (`tty` is written there).
    public let frontendPath: String
    /// Our end of the event channel.
    public let localPort: EventChannelPort
    private let mapping: GrantMappingHandle
    private let eventChannel: any EventChannelBackend
    private let store: any XenbusStore
    private let logger: Logger
    private let metrics: ConsoleBackMetrics
    private struct State {
        var tasks: [Task<Void, Never>] = []
        var closed = false
        var backendStatePath: String?
    }
    private let state = Mutex(State())

    init(
        id: ConsoleID, connection: ConsoleConnection, mapping: GrantMappingHandle, localPort: EventChannelPort,
        eventChannel: any EventChannelBackend, store: any XenbusStore, frontendPath: String, logger: Logger,
        metrics: ConsoleBackMetrics
    ) {
        self.id = id
        self.connection = connection
        self.mapping = mapping
        self.localPort = localPort
        self.eventChannel = eventChannel
        self.store = store
        self.frontendPath = frontendPath
        self.logger = logger
        self.metrics = metrics
    }

    /// The backend `state` key, written `Closed` on close (extra consoles only).
    var backendStatePath: String? {
        get { state.withLock { $0.backendStatePath } }
        set { state.withLock { $0.backendStatePath = newValue } }
    }

    /// Starts feeding events into the connection and watching for the frontend to go.
    func start(frontendGone: @escaping @Sendable (any XenbusStore, String) async throws -> Void) {
        let connection = self.connection
        let notifications = eventChannel.notifications(localPort)
        let events = Task {
            for await _ in notifications { connection.kick() }
            // The port was unbound or the guest's domain destroyed.
            connection.peerClosed()
        }
        let store = self.store
        let path = frontendPath
        let monitor = Task {
            do {
                try await frontendGone(store, path)
                connection.peerClosed()
            } catch {
                // Cancelled (we are closing) or xenstore lost: the event task still notices a dead domain.
            }
        }
        state.withLock { $0.tasks = [events, monitor] }
    }

    // MARK: - Bytes

    /// The guest's output as an async sequence of chunks (ends when the frontend goes, after the last byte).
    ///
    /// OCaml: `Console_ring.Ring.Back.Reader.read` in `read_the_ring`
    public var bytes: ConsoleByteStream { connection.bytes }

    /// Types `bytes` into the guest's input ring, waiting while it is full.
    ///
    /// OCaml: the `read_the_console` loop of `Conback.service_thread`
    public func write(_ bytes: some Collection<UInt8>) async throws(ConsoleError) {
        try await connection.write(bytes)
    }

    /// Bytes moved so far.
    ///
    /// OCaml: `Conback.stats`
    public var statistics: ConsoleStatistics {
        let (read, written) = connection.statistics
        return ConsoleStatistics(totalRead: read, totalWrite: written)
    }

    /// Waits until the frontend goes away or the guest breaks the protocol; returns why.
    ///
    /// OCaml: the final `wait` of `Conback.Make.run`
    public func closed() async -> ConsoleError { await connection.closed() }

    /// Writes the pty path into the console's `tty` key, as xenconsoled does.
    ///
    /// OCaml: none (xenconsoled `domain_create_tty`)
    public func publishTTY(_ path: String) async throws(ConsoleError) {
        let key = "\(frontendPath)/\(ConsoleKeys.tty)"
        do {
            try await store.write(key, path)
        } catch {
            throw .xenstore(op: "write", path: key, underlying: error)
        }
    }

    // MARK: - Closing

    /// Disconnects: stops the tasks, ends the connection (which lets go of the ring), unbinds the port,
    /// (extra consoles) writes backend state `Closed`, waits for the tasks to finish and only then unmaps the
    /// ring: nothing that could still touch the page outlives the mapping. Idempotent. Returns why the unmap
    /// failed, if it did (`GrantTableError.stillInUse(refs:)` means a view of the page was kept elsewhere:
    /// the page is then unmapped when that view goes).
    ///
    /// OCaml: `Lwt.cancel be_thread` + `Gnttab.unmap_exn` in `Conback`
    @discardableResult
    public func close() async -> GrantTableError? {
        let (tasks, alreadyClosed, statePath) = state.withLock { state in
            defer { state.closed = true }
            return (state.tasks, state.closed, state.backendStatePath)
        }
        guard !alreadyClosed else { return nil }
        if case .protocolViolation(let error) = connection.failure {
            metrics.peerDisconnects.increment()
            logger.debug("guest broke the console ring protocol: disconnecting", metadata: ["reason": "\(error)"])
        }
        for task in tasks { task.cancel() }
        connection.close()
        try? eventChannel.unbind(localPort)
        if let statePath {
            let closed = XenbusState.closed.xenstoreValue
            // Only if the backend directory still exists: a toolstack may have removed the device already.
            _ = try? await store.writeIfPresent(statePath, closed)
        }
        // Join before release: a task still inside the ring must finish before the page goes.
        for task in tasks { await task.value }
        let (read, written) = connection.statistics
        logger.debug("console closed", metadata: ["bytes-read": "\(read)", "bytes-written": "\(written)"])
        do throws(GrantTableError) {
            try mapping.unmap()
            return nil
        } catch {
            return error
        }
    }
}
