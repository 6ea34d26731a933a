public import NBDProtocol
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// TLS settings for `STARTTLS`.
///
/// OCaml: none (ocaml-nbd has TLS on the server only)
public struct NBDTLSOptions: Sendable, Equatable {
    /// PEM file of the CA that signed the server certificate (nil: the system trust store).
    public var caFile: String?
    /// PEM client certificate and key, when the server verifies clients.
    public var certificateFile: String?
    /// The `keyFile` field.
    public var keyFile: String?
    /// The name the server certificate must carry (nil: the TCP host).
    public var hostname: String?
    /// False to skip certificate checks (the URI's `tls-verify-peer=false`).
    public var verifyPeer: Bool

    /// Memberwise initializer.
    public init(
        caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, hostname: String? = nil,
        verifyPeer: Bool = true
    ) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.hostname = hostname
        self.verifyPeer = verifyPeer
    }

    /// Reads `tls-certificates=DIR` (libnbd/nbdkit layout: ca-cert.pem, client-cert.pem, client-key.pem),
    /// `tls-hostname` and `tls-verify-peer` from a URI.
    public init(uri: NBDURI) {
        let directory = uri.query["tls-certificates"]
        self.init(
            caFile: uri.query["tls-ca-file"] ?? directory.map { "\($0)/ca-cert.pem" },
            certificateFile: directory.map { "\($0)/client-cert.pem" },
            keyFile: directory.map { "\($0)/client-key.pem" }, hostname: uri.tlsHostname,
            verifyPeer: uri.tlsVerifyPeer)
    }
}

/// A connected socket to an NBD server, before negotiation: the `Channel.channel` of ocaml-nbd.
///
/// OCaml: `Nbd_lwt_unix.connect` (returns a `Channel.channel`)
public final class NBDChannel: Sendable {
    let channel: any Channel
    let handler: NBDChannelHandler
    /// Where it is connected.
    public let endpoint: NBDEndpoint
    /// The socket under `channel` (we open it ourselves, so that a plain connection can leave NIO).
    private let descriptor: Int32
    /// The transmission phase of a plain connection, once the handshake moved it off NIO.
    private let directConnection = Mutex<NBDDirectConnection?>(nil)

    private init(channel: any Channel, handler: NBDChannelHandler, endpoint: NBDEndpoint, descriptor: Int32) {
        self.channel = channel
        self.handler = handler
        self.endpoint = endpoint
        self.descriptor = descriptor
    }

    /// Opens a TCP or unix socket connection. `timeout` bounds the connect (nil: the OS default).
    ///
    /// OCaml: `Nbd_lwt_unix.connect`
    public static func connect(to endpoint: NBDEndpoint, timeout: Duration? = nil) async throws(NBDError)
        -> NBDChannel
    {
        let descriptor = try await NBDSocket.connect(endpoint, timeout: timeout)
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let handler = NBDChannelHandler(eventLoop: eventLoop)
        let bootstrap = ClientBootstrap(group: eventLoop)
            // Small to start: the handshake's messages are tens of bytes, and a 256 KiB receive buffer per read
            // (fresh pages each time, given back with an munmap that interrupts every core) cost a copy's start
            // ~3 ms. Data read over the channel (TLS) grows it within a few reads.
            .channelOption(
                ChannelOptions.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 1 << 13, maximum: 1 << 20)
            )
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
        do {
            let channel = try await bootstrap.withConnectedSocket(descriptor).get()
            return NBDChannel(channel: channel, handler: handler, endpoint: endpoint, descriptor: descriptor)
        } catch {
            throw .connectFailed(endpoint: endpoint.description, reason: String(describing: error))
        }
    }

    /// The direct transmission path, if the handshake moved the connection off NIO.
    var direct: NBDDirectConnection? { directConnection.withLock { $0 } }

    /// Switches to the transmission phase. TLS connections stay on NIO; plain ones move to an
    /// ``NBDDirectConnection`` (its own I/O thread, no event-loop hop per reply).
    func startTransmission(structured: Bool, extended: Bool, tls: Bool) async throws(NBDError) {
        if tls {
            try await wait(handler.startTransmission(structured: structured, extended: extended))
            return
        }
        let (copy, leftover) = try await wait(handler.detach(descriptor: descriptor))
        try? await channel.closeFuture.get()
        let connection = try NBDDirectConnection(
            descriptor: copy, leftover: leftover, structured: structured, extended: extended)
        try connection.start()
        directConnection.withLock { $0 = connection }
    }

    // MARK: - Handshake I/O

    func send(_ bytes: [UInt8]) async throws(NBDError) { try await wait(handler.write(bytes)) }

    func receive(_ count: Int) async throws(NBDError) -> [UInt8] { try await wait(handler.read(count)) }

    /// Puts TLS under the NBD handler (after the server ACKed `STARTTLS`).
    func startTLS(_ options: NBDTLSOptions) async throws(NBDError) {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile = options.caFile { configuration.trustRoots = .file(caFile) }
        if let certificate = options.certificateFile, let key = options.keyFile,
            let certificates = try? NIOSSLCertificate.fromPEMFile(certificate), !certificates.isEmpty
        {
            configuration.certificateChain = certificates.map { .certificate($0) }
            configuration.privateKey = (try? NIOSSLPrivateKey(file: key, format: .pem)).map { .privateKey($0) }
        }
        // The chain is checked by BoringSSL; the name is checked by us after the handshake (NIOSSL would also
        // accept a certificate whose IP SAN matches the socket, whatever tls-hostname says).
        configuration.certificateVerification = options.verifyPeer ? .noHostnameVerification : .none
        let context: NIOSSLContext
        do { context = try NIOSSLContext(configuration: configuration) } catch {
            throw .tlsFailed(String(describing: error))
        }
        let hostname = options.hostname ?? "localhost"
        let name = Self.sniName(hostname)
        let pipeline = channel.pipeline
        let handler = self.handler
        let names = try await wait(
            channel.eventLoop.flatSubmit {
                let done = pipeline.eventLoop.makePromise(of: Void.self)
                handler.tlsHandshake = done
                do {
                    try pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: context, serverHostname: name), position: .first)
                } catch { done.fail(error) }
                return done.futureResult.flatMapThrowing {
                    let ssl = try pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)
                    guard let certificate = ssl.peerCertificate else { return [CertificateName]() }
                    return CertificateName.names(of: certificate)
                }
            })
        guard !options.verifyPeer || CertificateName.matches(names, hostname: hostname) else {
            channel.close(promise: nil)
            throw .tlsFailed("the server certificate does not name \(hostname)")
        }
    }

    /// SNI takes host names only, not IP literals.
    private static func sniName(_ name: String) -> String? {
        if name.contains(":") { return nil }
        if name.split(separator: ".").count == 4, name.allSatisfy({ $0.isNumber || $0 == "." }) { return nil }
        return name
    }

    /// Closes the socket.
    func close() async {
        if let direct { await direct.close() }
        try? await channel.close().get()
    }
}

/// Awaits a future, keeping NBD errors typed. The continuation is bound to the caller's isolation, so a
/// caller isolated to the connection's event loop (see ``NBDClient/executor``) resumes without a thread hop.
func wait<T: Sendable>(
    _ future: EventLoopFuture<T>, isolation: isolated (any Actor)? = #isolation
) async throws(NBDError) -> T {
    let result: Result<T, any Error> = await withUnsafeContinuation(isolation: isolation) { continuation in
        future.whenComplete { continuation.resume(returning: $0) }
    }
    switch result {
    case .success(let value): return value
    case .failure(let error as NBDError): throw error
    case .failure(let error as NIOSSLError): throw .tlsFailed(String(describing: error))
    case .failure(let error): throw .io(String(describing: error))
    }
}
