/// How ``NBDClient/connect(_:options:)`` connects.
///
/// OCaml: none (ocaml-nbd has no options; libnbd's `nbd_set_*` calls)
public struct NBDClientOptions: Sendable, Equatable {
    /// What to negotiate (TLS is filled in from `nbds` URIs).
    public var negotiation: NBDNegotiationOptions
    /// Connections to open when the server advertises `CAN_MULTI_CONN` (1: never more than one).
    public var connections: Int
    /// Bound on connecting plus the handshake (nil: none, the default).
    public var connectTimeout: Duration?
    /// Bound on each request (nil: none, the default). A timed-out request fails with
    /// ``NBDError/timedOut(operation:)``; a late reply is consumed and dropped.
    public var requestTimeout: Duration?
    /// Largest single request sent; larger reads and writes are split (capped by the server's maximum).
    public var maxRequestBytes: Int

    /// Memberwise initializer.
    public init(
        negotiation: NBDNegotiationOptions = NBDNegotiationOptions(), connections: Int = 1,
        connectTimeout: Duration? = nil, requestTimeout: Duration? = nil, maxRequestBytes: Int = 32 << 20
    ) {
        self.negotiation = negotiation
        self.connections = connections
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.maxRequestBytes = maxRequestBytes
    }
}
