public import BlockDevice
public import NBDProtocol

/// One export: a name and the device behind it.
///
/// OCaml: none (`Nbd.Server.serve` takes the `Mirage_block` module and device; `?read_only`)
public struct NBDServerExport: Sendable {
    /// The name clients ask for ("" is the default export).
    public var name: String
    /// A description for `nbdinfo --list` ("" for none).
    public var description: String
    /// The device served.
    public var device: any BlockDevice
    /// Refuse writes even if the device accepts them.
    public var readOnly: Bool
    /// Advertise `CAN_MULTI_CONN`. It holds whenever every connection serves this one device object and
    /// the device's `flush` covers every completed write, as `BlockDevice.flush()` promises: a write
    /// completed on one connection is then seen by reads on any other, and one flush makes them all
    /// durable. Turn it off for a device whose flush covers less.
    public var multiConnection: Bool

    /// Memberwise initializer.
    public init(
        name: String = "", description: String = "", device: any BlockDevice, readOnly: Bool = false,
        multiConnection: Bool = true
    ) {
        self.name = name
        self.description = description
        self.device = device
        self.readOnly = readOnly
        self.multiConnection = multiConnection
    }
}

/// X.509 TLS for the server, in nbdkit's and qemu-nbd's certificate directory layout.
///
/// OCaml: none (ocaml-nbd's server takes a `make_tls_channel` function)
public struct NBDServerTLS: Sendable, Equatable {
    /// PEM server certificate (chain).
    public var certificateFile: String
    /// PEM private key.
    public var keyFile: String
    /// PEM CA that signs client certificates; with `verifyClients`, clients must present one.
    public var caFile: String?
    /// Require and check client certificates.
    public var verifyClients: Bool
    /// Required (every option but `STARTTLS` and `ABORT` refused before TLS) or at the client's choice.
    public var mode: NBDServerTLSMode

    /// Memberwise initializer.
    public init(
        certificateFile: String, keyFile: String, caFile: String? = nil, verifyClients: Bool = false,
        mode: NBDServerTLSMode = .required
    ) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.caFile = caFile
        self.verifyClients = verifyClients
        self.mode = mode
    }

    /// `DIR/server-cert.pem`, `DIR/server-key.pem` and `DIR/ca-cert.pem` (nbdkit's `--tls-certificates`).
    public init(
        certificatesDirectory directory: String, verifyClients: Bool = false, mode: NBDServerTLSMode = .required
    ) {
        self.init(
            certificateFile: "\(directory)/server-cert.pem", keyFile: "\(directory)/server-key.pem",
            caFile: "\(directory)/ca-cert.pem", verifyClients: verifyClients, mode: mode)
    }
}

/// How the server runs, and the bounds that keep a hostile client from exhausting it.
///
/// OCaml: none (ocaml-nbd's server has no options)
public struct NBDServerOptions: Sendable {
    /// TLS (nil: NOTLS mode).
    public var tls: NBDServerTLS?
    /// Answer `OPT_LIST` (else `NBD_REP_ERR_POLICY`).
    public var allowList: Bool
    /// Accept `OPT_EXTENDED_HEADERS`.
    public var extendedHeaders: Bool
    /// Largest READ/WRITE payload (advertised as the maximum block size).
    public var maxPayload: Int
    /// Bytes of request and reply data one connection may hold at once (READ buffers, WRITE payloads,
    /// unsent replies); beyond it the server stops reading that connection until replies drain.
    public var maxInFlightBytes: Int
    /// Requests one connection may have in flight; beyond it the server stops reading it.
    public var maxRequestsInFlight: Int
    /// Connections served at once; more are closed on accept.
    public var maxConnections: Int
    /// Bound on the handshake (nil: none).
    public var handshakeTimeout: Duration?
    /// READs at least this long are answered sparsely (hole chunks for holes) when the device knows its
    /// allocation and structured replies are in use.
    public var sparseReadMinimum: Int
    /// READs at least this long, from a device that lends cached ranges of its file (`FileBlockDevice`), are
    /// sent with `sendfile`: the page cache's pages go to the socket without a copy through a buffer. Nil:
    /// always copy.
    public var zeroCopyReadMinimum: Int?
    /// How long a connection's thread keeps polling its socket without sleeping after traffic (XenCore's spin
    /// policy, as XenStoreClient's I/O thread): a client that sends its next request within the window finds
    /// the thread awake, instead of paying a wake-up per round trip (on a VM whose idle vCPUs halt, 0.75x
    /// `nbdkit`'s 4 KiB reads per second at queue depth 1 asleep, 1.2–1.3x polling). Costs up to one core per
    /// connection while its client keeps it that busy, yielded to any other thread that can run; an idle
    /// connection spins once for the window, then sleeps. Nil: always sleep in `poll`.
    public var busyPollWindow: Duration?

    /// Memberwise initializer.
    public init(
        tls: NBDServerTLS? = nil, allowList: Bool = true, extendedHeaders: Bool = true, maxPayload: Int = 32 << 20,
        maxInFlightBytes: Int = 64 << 20, maxRequestsInFlight: Int = 512, maxConnections: Int = 128,
        handshakeTimeout: Duration? = .seconds(30), sparseReadMinimum: Int = 1 << 20,
        zeroCopyReadMinimum: Int? = 64 << 10, busyPollWindow: Duration? = .microseconds(100)
    ) {
        self.tls = tls
        self.allowList = allowList
        self.extendedHeaders = extendedHeaders
        self.maxPayload = maxPayload
        self.maxInFlightBytes = maxInFlightBytes
        self.maxRequestsInFlight = maxRequestsInFlight
        self.maxConnections = maxConnections
        self.handshakeTimeout = handshakeTimeout
        self.sparseReadMinimum = sparseReadMinimum
        self.zeroCopyReadMinimum = zeroCopyReadMinimum
        self.busyPollWindow = busyPollWindow
    }
}

/// Why the server could not start or listen.
///
/// OCaml: none (ocaml-nbd's server raises `Failure`)
public enum NBDServerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An export cannot be served as configured.
    case invalidExport(String)
    /// The TLS configuration could not be loaded.
    case tls(String)
    /// The listening socket could not be set up.
    case listen(endpoint: String, reason: String)

    /// A readable rendering.
    public var description: String {
        switch self {
        case .invalidExport(let why): "invalid export: \(why)"
        case .tls(let why): "TLS: \(why)"
        case .listen(let endpoint, let reason): "cannot listen on \(endpoint): \(reason)"
        }
    }
}
