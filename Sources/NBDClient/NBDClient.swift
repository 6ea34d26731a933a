public import NBDProtocol
import NIOCore
import Synchronization
import XenCore

/// An NBD client: one export over one or more connections, many requests in flight on each.
///
/// A `Sendable` final class. Plain connections run the transmission phase on an I/O thread per connection
/// (`NBDDirectConnection`): requests are written by the caller, READ data is read straight into the
/// caller's pages. TLS connections stay on NIO: requests go to the connection's event loop, replies are
/// decoded there and copied once into the caller's pages.
///
/// OCaml: `Nbd.Client.t`
public final class NBDClient: Sendable {
    /// The negotiated session of the first connection.
    public let session: NBDSession
    private let channels: [NBDChannel]
    /// Per connection: the direct path (plain connections) or nil (TLS: NIO's handler).
    let directs: [NBDDirectConnection?]
    private let requestTimeout: TimeAmount?
    private let maxRequest: UInt64
    private let nextChannel = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)

    /// False once `disconnect` ran.
    var isOpen: Bool { !closed.load(ordering: .relaxed) }

    init(session: NBDSession, channels: [NBDChannel], options: NBDClientOptions) {
        self.session = session
        self.channels = channels
        self.directs = channels.map(\.direct)
        self.requestTimeout = options.requestTimeout.map { .nanoseconds($0.nanoseconds) }
        let serverMax = UInt64(session.blockSize.maximum)
        var limit = min(UInt64(max(options.maxRequestBytes, 4096)), serverMax)
        limit -= limit % UInt64(max(session.blockSize.minimum, 1))
        self.maxRequest = max(limit, UInt64(session.blockSize.minimum))
    }

    deinit {
        // A client dropped without `disconnect`: its I/O threads must not poll forever.
        for direct in directs { direct?.closeSoon() }
    }

    // MARK: - Connecting

    /// Connects to an NBD URI (`nbd://`, `nbds://`, `nbd+unix://`, `nbds+unix://`) and negotiates its export.
    /// `nbds` URIs require TLS and never fall back to plaintext. Opens `options.connections` connections
    /// when the server allows multi-conn.
    ///
    /// OCaml: `Nbd_lwt_unix.connect` + `Nbd.Client.negotiate` (libnbd: `nbd_connect_uri`)
    public static func connect(_ uri: NBDURI, options: NBDClientOptions = NBDClientOptions()) async throws(NBDError)
        -> NBDClient
    {
        var options = options
        if uri.tls {
            options.negotiation.tls = options.negotiation.tls ?? NBDTLSOptions(uri: uri)
        } else {
            options.negotiation.tls = nil
        }
        let settled = options
        let first = try await open(uri, options: settled)
        let wanted = first.session.info.flags.contains(.canMultiConn) ? max(1, options.connections) : 1
        // The other connections handshake at the same time (each costs round trips, not bandwidth).
        let others = await withTaskGroup(of: Result<NBDChannel, NBDError>.self) { group in
            for _ in 1..<wanted {
                group.addTask {
                    do throws(NBDError) { return .success(try await open(uri, options: settled).channel) } catch {
                        return .failure(error)
                    }
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        var channels = [first.channel]
        var failure: NBDError?
        for result in others {
            switch result {
            case .success(let channel): channels.append(channel)
            case .failure(let error): failure = failure ?? error
            }
        }
        if let failure {
            for channel in channels { await channel.close() }
            throw failure
        }
        return NBDClient(session: first.session, channels: channels, options: settled)
    }

    /// Parses `uri` and connects.
    ///
    /// OCaml: none (libnbd: `nbd_connect_uri`)
    public static func connect(uri: String, options: NBDClientOptions = NBDClientOptions()) async throws(NBDError)
        -> NBDClient
    {
        let parsed: NBDURI
        do { parsed = try NBDURI(parsing: uri) } catch { throw .invalidRequest(error.description) }
        return try await connect(parsed, options: options)
    }

    private static func open(_ uri: NBDURI, options: NBDClientOptions) async throws(NBDError)
        -> (channel: NBDChannel, session: NBDSession)
    {
        let channel = try await NBDChannel.connect(to: uri.endpoint, timeout: options.connectTimeout)
        let timer = options.connectTimeout.map { timeout in
            channel.channel.eventLoop.scheduleTask(in: .nanoseconds(timeout.nanoseconds)) {
                channel.handler.fail(.timedOut(operation: "NBD handshake with \(uri.endpoint)"))
            }
        }
        defer { timer?.cancel() }
        do {
            return (
                channel, try await NBDNegotiator.negotiate(channel, export: uri.export, options: options.negotiation)
            )
        } catch {
            await channel.close()
            throw error
        }
    }

    /// Lists the exports of the server on `channel`, then aborts the handshake and closes the channel
    /// (also when it fails: refused by policy, TLS required, unsupported, or a failed connection).
    ///
    /// OCaml: `Nbd.Client.list`
    public static func list(_ channel: NBDChannel, tls: NBDTLSOptions? = nil) async -> Result<[String], NBDListError> {
        switch await listWithDescriptions(channel, tls: tls) {
        case .success(let exports): .success(exports.map(\.name))
        case .failure(let error): .failure(error)
        }
    }

    /// Like ``list(_:tls:)`` with each export's description.
    ///
    /// OCaml: none (libnbd: `nbd_opt_list` + `nbd_get_list_export_description`)
    public static func listWithDescriptions(_ channel: NBDChannel, tls: NBDTLSOptions? = nil) async
        -> Result<[(name: String, description: String)], NBDListError>
    {
        let result: Result<[(name: String, description: String)], NBDListError>
        do { result = try await NBDNegotiator.list(channel, tls: tls) } catch { result = .failure(.failed(error)) }
        await channel.close()
        return result
    }

    /// Negotiates `export` on an already-connected channel; returns the client, the size in bytes and the
    /// transmission flags.
    ///
    /// OCaml: `Nbd.Client.negotiate`
    public static func negotiate(
        _ channel: NBDChannel, export: String, options: NBDClientOptions = NBDClientOptions()
    ) async throws(NBDError) -> (client: NBDClient, size: UInt64, flags: NBDTransmissionFlags) {
        let session: NBDSession
        do { session = try await NBDNegotiator.negotiate(channel, export: export, options: options.negotiation) } catch
        {
            await channel.close()
            throw error
        }
        let client = NBDClient(session: session, channels: [channel], options: options)
        return (client, session.info.size, session.info.flags)
    }

    // MARK: - Properties

    /// Export size in bytes.
    ///
    /// OCaml: `Nbd.Client.get_info` (`size_sectors` × sector size)
    public var size: UInt64 { session.info.size }

    /// Transmission flags.
    ///
    /// OCaml: `Nbd.Protocol.PerExportFlag.t list` from `Nbd.Client.negotiate`
    public var flags: NBDTransmissionFlags { session.info.flags }

    /// Open connections (more than one only with `CAN_MULTI_CONN`).
    ///
    /// OCaml: none (libnbd: `nbd_can_multi_conn`; nbdcopy opens N handles)
    public var connectionCount: Int { channels.count }

    /// Largest request this client sends.
    ///
    /// OCaml: none (libnbd: `nbd_get_block_size(LIBNBD_SIZE_MAXIMUM)`)
    public var maxRequestBytes: Int { Int(maxRequest) }

    /// The serial executor of the first connection: its I/O thread (plain connections) or its event loop
    /// (TLS), for actors that want to run next to the connection. On a plain connection, prefer
    /// ``taskExecutor(connection:)``: a reply resumes a task that prefers it right on the I/O thread that
    /// read it (one wake-up per round trip, as libnbd's aio loop), whereas the runtime resumes an actor's
    /// continuation through the global pool first.
    ///
    /// OCaml: none (Lwt runs everything on one thread)
    public var executor: any SerialExecutor { executor(connection: 0) }

    /// The serial executor of connection `index` (see ``executor``).
    ///
    /// OCaml: none
    public func executor(connection index: Int) -> any SerialExecutor {
        if let direct = directs[index % directs.count] { return direct.executor }
        return channels[index % channels.count].channel.eventLoop.executor
    }

    /// The task executor of connection `index`'s I/O thread (plain connections; nil under TLS). Tasks that
    /// prefer it (`Task(executorPreference:)`, `group.addTask(executorPreference:)`) submit on that
    /// connection, have their requests batched into the thread's next `sendmsg`, and are resumed on the
    /// thread that read their reply: one thread wake-up per round trip, like a blocking `nbd_pread`.
    ///
    /// OCaml: none
    public func taskExecutor(connection index: Int) -> (any TaskExecutor)? {
        directs[index % directs.count]?.executor
    }

    /// The sector-addressed `Mirage_block.S` view of this client (``NBDBlockDevice``), for code written
    /// against `BlockDevice`.
    ///
    /// OCaml: `Nbd.Client` used as a `Mirage_block.S`
    public var blockDevice: NBDBlockDevice { NBDBlockDevice(self) }

    // MARK: - Sending

    /// The connection for the next request: the one whose I/O thread we are running on (a task preferring
    /// that executor stays on its connection, as each nbdcopy worker thread owns one handle), else round
    /// robin.
    private func connectionIndex() -> Int {
        if channels.count == 1 { return 0 }
        for (index, direct) in directs.enumerated() where direct?.onIOThread == true { return index }
        return nextChannel.add(1, ordering: .relaxed).oldValue % channels.count
    }

    /// Sends one request on one connection (round robin) and returns its pending reply.
    func send(
        _ command: NBDCommand, flags: NBDCommandFlags = [], offset: UInt64, length: UInt64,
        payload: [PageBuffer] = [], file: FileRangeLease? = nil, pipe: SplicePipe? = nil, buffers: [PageBuffer] = []
    ) -> NBDTicket {
        var flags = flags
        // With extended headers a WRITE must say its length is a payload length (the spec's MUST).
        if command == .write, session.extendedHeaders { flags.insert(.payloadLength) }
        let index = connectionIndex()
        if let direct = directs[index] {
            switch direct.submit(
                command: command, flags: flags, offset: offset, length: length, payload: payload, file: file,
                pipe: pipe, buffers: buffers, timeout: requestTimeout?.nanoseconds)
            {
            case .success(let cookie): return .direct(direct, cookie)
            case .failure(let error): return .failed(error)
            }
        }
        // No sendfile or splice under TLS: pipe requests are copied by their callers; a file range is read
        // into pages first.
        precondition(pipe == nil, "pipe requests go on plain connections only")
        var payload = payload
        if let file {
            guard let pages = file.readIntoPages() else {
                return .failed(.io("cannot read \(file.count) bytes of the file at \(file.offset)"))
            }
            payload = [pages]
        }
        return .future(
            channels[index].handler.submit(
                command: command, flags: flags, offset: offset, length: length, payload: payload, buffers: buffers,
                timeout: requestTimeout))
    }

    /// Validates a byte range: open, aligned to the minimum block size, inside the export.
    func check(offset: UInt64, length: UInt64, write: Bool) throws(NBDError) {
        if closed.load(ordering: .relaxed) { throw .disconnected }
        if write, flags.contains(.readOnly) { throw .readOnly }
        let minimum = UInt64(max(session.blockSize.minimum, 1))
        guard offset % minimum == 0, length % minimum == 0 else {
            throw .invalidRequest("\(offset)+\(length) not aligned to the server's \(minimum)-byte minimum")
        }
        let (end, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, end <= size else { throw .invalidRequest("\(offset)+\(length) beyond the end (\(size))") }
    }

    /// Awaits every request (never abandoning a submitted one), then throws the first failure.
    func awaitAll(
        _ tickets: [NBDTicket], isolation: isolated (any Actor)? = #isolation
    ) async throws(NBDError)
        -> [NBDCompletion]
    {
        var first: NBDError?
        var results: [NBDCompletion] = []
        results.reserveCapacity(tickets.count)
        for ticket in tickets {
            do { results.append(try await ticket.reply()) } catch { first = first ?? error }
        }
        if let first { throw first }
        return results
    }

    /// Splits `[offset, offset+length)` into pieces no larger than the maximum request.
    func pieces(offset: UInt64, length: UInt64) -> [(offset: UInt64, length: UInt64)] {
        var result: [(offset: UInt64, length: UInt64)] = []
        var at = offset
        let end = offset + length
        while at < end {
            let take = min(maxRequest, end - at)
            result.append((at, take))
            at += take
        }
        return result
    }

    // MARK: - Disconnect

    /// Sends `NBD_CMD_DISC` on every connection and closes them. Never fails; later calls fail with
    /// ``NBDError/disconnected``.
    ///
    /// OCaml: `Nbd.Client.disconnect`
    public func disconnect() async {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        for (channel, direct) in zip(channels, directs) {
            if let direct {
                await direct.disconnect()
            } else {
                _ = try? await wait(channel.handler.submit(command: .disconnect, flags: [], offset: 0, length: 0))
            }
            await channel.close()
        }
    }
}

/// A submitted request's pending reply, on either transport.
enum NBDTicket: Sendable {
    case future(EventLoopFuture<NBDCompletion>)
    case direct(NBDDirectConnection, UInt64)
    case failed(NBDError)

    /// Waits for the reply; resumes on the caller's isolation.
    func reply(isolation: isolated (any Actor)? = #isolation) async throws(NBDError) -> NBDCompletion {
        switch self {
        case .future(let future): return try await wait(future)
        case .direct(let connection, let cookie): return try await connection.wait(cookie).get()
        case .failed(let error): throw error
        }
    }
}
