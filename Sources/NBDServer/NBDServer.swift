import BlockDevice
public import NBDProtocol
import NIOSSL
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// An NBD server: exports `BlockDevice`s over unix sockets and TCP.
///
/// Each connection runs on a thread of its own: the handshake (a pure `NBDServerHandshake` fed from
/// the socket), then transmission, where the thread decodes requests, answers reads that need no waiting
/// (`BlockDevice.readWithoutWaiting(at:into:)`) on the spot and runs every other request as a task on
/// itself (it is their task executor), so a device's completion and the reply go out without a thread hop.
/// Replies are sent out of order, as requests complete, with one gathering `sendmsg` per batch. TLS
/// connections run the same code on one end of a socket pair whose other end swift-nio-ssl encrypts.
///
/// OCaml: `Nbd.Server` (`connect`, `serve`, `close`) and `Nbd_lwt_unix.with_connection`
public final class NBDServer: Sendable {
    struct State {
        var connections: [ObjectIdentifier: NBDServerConnection] = [:]
        var listeners: [NBDServerListener] = []
        var shuttingDown = false
        var idleWaiters: [UnsafeContinuation<Void, Never>] = []
    }

    /// The exports, the first being the default.
    public let exports: [NBDServerExport]
    /// What the handshake offers for each export.
    public let descriptions: [NBDExportDescription]
    /// The options it runs with.
    public let options: NBDServerOptions
    /// Bytes per sector of each export's device.
    let sectorSizes: [Int]
    let tlsContext: NIOSSLContext?
    let state = Mutex(State())
    /// READ buffers and WRITE payloads of every connection, recycled.
    let pool = PageBufferPool(maxPooledBytes: 128 << 20)

    /// Prepares `exports` (reading each device's size) and loads the TLS certificates.
    ///
    /// OCaml: none (`Nbd.Server.serve` reads `get_info` per connection)
    public init(exports: [NBDServerExport], options: NBDServerOptions = NBDServerOptions()) async throws(NBDServerError)
    {
        guard !exports.isEmpty else { throw .invalidExport("no exports") }
        guard Set(exports.map(\.name)).count == exports.count else { throw .invalidExport("duplicate export names") }
        guard options.maxPayload >= 65536, options.maxPayload <= Int(UInt32.max) else {
            throw .invalidExport("maximum payload \(options.maxPayload) outside 64 KiB...4 GiB")
        }
        var descriptions: [NBDExportDescription] = []
        var sectorSizes: [Int] = []
        for export in exports {
            let info = await export.device.info()
            let sector = info.sectorSize
            guard sector > 0, sector.nonzeroBitCount == 1, sector <= 65536 else {
                throw .invalidExport("\(export.name): sector size \(sector) is not a power of two up to 64 KiB")
            }
            guard export.name.utf8.count <= NBDOptionRequest.maxString, !export.name.utf8.contains(0) else {
                throw .invalidExport("export name too long or containing NUL")
            }
            let writable = info.readWrite && !export.readOnly
            var flags: NBDTransmissionFlags = [.hasFlags, .sendCache, .sendDF]
            flags.insert(writable ? [.sendFlush, .sendFUA, .sendTrim, .sendWriteZeroes, .sendFastZero] : .readOnly)
            if export.multiConnection { flags.insert(.canMultiConn) }
            let maximum = UInt32(options.maxPayload - options.maxPayload % sector)
            descriptions.append(
                NBDExportDescription(
                    name: export.name, description: export.description,
                    info: NBDExportInfo(size: info.sizeBytes, flags: flags),
                    blockSize: NBDBlockSize(
                        minimum: UInt32(sector), preferred: UInt32(max(4096, sector)), maximum: maximum)))
            sectorSizes.append(sector)
        }
        self.exports = exports
        self.descriptions = descriptions
        self.sectorSizes = sectorSizes
        self.options = options
        self.tlsContext = try options.tls.map { tls throws(NBDServerError) in try Self.context(tls) }
    }

    private static func context(_ tls: NBDServerTLS) throws(NBDServerError) -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(tls.certificateFile)
            let key = try NIOSSLPrivateKey(file: tls.keyFile, format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            if tls.verifyClients {
                guard let ca = tls.caFile else { throw NBDServerError.tls("verifying clients needs a CA file") }
                configuration.trustRoots = .file(ca)
                configuration.certificateVerification = .noHostnameVerification
            }
            return try NIOSSLContext(configuration: configuration)
        } catch let error as NBDServerError {
            throw error
        } catch {
            throw .tls(String(describing: error))
        }
    }

    // MARK: - Serving

    /// Starts listening on `endpoint` (a unix socket path, removed first if it is a stale socket, or a TCP
    /// host and port; port 0 picks a free one); connections are served until ``shutdown()``, which stops
    /// every listener too (removing its socket file): the listener's own `stop()` is for stopping one early.
    ///
    /// OCaml: `Nbd_lwt_unix.with_connection` / `nbd-tool serve` (their listen/accept loop)
    public func listen(on endpoint: NBDEndpoint) throws(NBDServerError) -> NBDServerListener {
        let listener = try NBDServerListener(endpoint: endpoint, server: self)
        let accepted = state.withLock { state -> Bool in
            guard !state.shuttingDown else { return false }
            state.listeners.append(listener)
            return true
        }
        guard accepted else {
            listener.stop()
            throw .listen(endpoint: endpoint.description, reason: "the server is shutting down")
        }
        try listener.start()
        return listener
    }

    /// Serves one connected socket (taking ownership of it) until the client disconnects or the server
    /// shuts down.
    ///
    /// OCaml: `Nbd.Server.connect` + `Nbd.Server.serve` + `Nbd.Server.close`
    public func serve(descriptor: Int32) async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            start(descriptor: descriptor) { continuation.resume() }
        }
    }

    /// Connections being served.
    ///
    /// OCaml: none
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    /// Requests being served on all connections, and the bytes they hold (request buffers and replies not
    /// yet sent): what ``NBDServerOptions/maxInFlightBytes`` bounds per connection.
    ///
    /// OCaml: none
    public var inFlight: (requests: Int, bytes: Int) {
        let connections = state.withLock { Array($0.connections.values) }
        return connections.reduce((0, 0)) { total, connection in
            let (requests, bytes) = connection.load
            return (total.0 + requests, total.1 + bytes)
        }
    }

    /// Stops every listener, refuses new connections, lets each connection finish the requests it has in
    /// flight and closes it; returns when all are gone.
    ///
    /// OCaml: none (`Nbd.Server.close` closes one connection)
    public func shutdown() async {
        let (listeners, connections) = state.withLock { state in
            state.shuttingDown = true
            defer { state.listeners = [] }
            return (state.listeners, Array(state.connections.values))
        }
        for listener in listeners { listener.stop() }
        for connection in connections { connection.requestClose() }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let idle = state.withLock { state -> Bool in
                if state.connections.isEmpty { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if idle { continuation.resume() }
        }
    }

    /// Starts serving `descriptor` on a connection thread; `ended` runs when it is over.
    func start(descriptor: Int32, ended: @escaping @Sendable () -> Void = {}) {
        let connection = NBDServerConnection(descriptor: descriptor, server: self, ended: ended)
        let admitted = state.withLock { state -> Bool in
            guard !state.shuttingDown, state.connections.count < options.maxConnections else { return false }
            state.connections[ObjectIdentifier(connection)] = connection
            return true
        }
        guard admitted else {
            connection.abandon()
            return
        }
        connection.start()
    }

    /// A connection's thread is done with it.
    func remove(_ connection: NBDServerConnection) {
        let waiters = state.withLock { state -> [UnsafeContinuation<Void, Never>] in
            state.connections[ObjectIdentifier(connection)] = nil
            guard state.connections.isEmpty else { return [] }
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
