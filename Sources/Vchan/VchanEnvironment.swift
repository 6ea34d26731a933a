public import EventChannel
public import GrantTable
public import XenCore
public import XenStoreClient

/// The hypervisor and xenstore interfaces a vchan endpoint works through: the IO seam. The real ones
/// (``xen(xenstore:)``: gntalloc, gntdev, evtchn) and the simulated ones (`SimulatedDomain`'s
/// `openGntshr()`, `grantTable`, `eventChannel`) conform to the same protocols.
///
/// OCaml: the functor arguments of `Vchan.Endpoint.Make` (`EVENTS`, `MEMORY`, `CONFIGURATION`)
public struct VchanEnvironment: Sendable {
    /// The xenstore connection the rendezvous goes through.
    public var xenstore: XenStoreClient
    /// Event channels.
    public var eventChannel: any EventChannelBackend
    /// Sharing pages: needed by a server.
    public var gntshr: (any UnmapNotifyingGntshr)?
    /// Mapping pages: needed by a client.
    public var grantTable: (any UnmapNotifyingGrantTable)?
    /// This domain's id, or nil to read xenstore's `domid` as libxenvchan does.
    public var localDomain: DomainID?
    /// Why ``gntshr`` / ``grantTable`` are missing, when known.
    var unavailable: (gntshr: GrantTableError?, grantTable: GrantTableError?) = (nil, nil)

    /// An environment from its parts.
    ///
    /// OCaml: applying `Vchan.Endpoint.Make`
    public init(
        xenstore: XenStoreClient, eventChannel: any EventChannelBackend, gntshr: (any UnmapNotifyingGntshr)?,
        grantTable: (any UnmapNotifyingGrantTable)?, localDomain: DomainID? = nil
    ) {
        self.xenstore = xenstore
        self.eventChannel = eventChannel
        self.gntshr = gntshr
        self.grantTable = grantTable
        self.localDomain = localDomain
    }

    /// The real interfaces of this domain: `/dev/xen/evtchn` (required), `/dev/xen/gntalloc` and
    /// `/dev/xen/gntdev` (each left nil when it cannot be opened; a server or client needing it then fails
    /// with ``VchanError/grant(op:underlying:)``).
    ///
    /// OCaml: `Vchan_xen` / `Vchan_lwt_unix` (the instantiated functor)
    public static func xen(xenstore: XenStoreClient) throws(VchanError) -> VchanEnvironment {
        let events: XenEventChannel
        do throws(EventChannelError) { events = try XenEventChannel() } catch {
            throw .eventChannel(op: "open \(XenEventChannel.device)", underlying: error)
        }
        var environment = VchanEnvironment(xenstore: xenstore, eventChannel: events, gntshr: nil, grantTable: nil)
        do throws(GrantTableError) { environment.gntshr = try XenGntshr() } catch {
            environment.unavailable.gntshr = error
        }
        do throws(GrantTableError) { environment.grantTable = try XenGrantTable() } catch {
            environment.unavailable.grantTable = error
        }
        return environment
    }

    /// The gntshr interface, or the error that says why there is none.
    func requireGntshr() throws(VchanError) -> any UnmapNotifyingGntshr {
        guard let gntshr else {
            throw .grant(op: "open \(XenGntshr.device)", underlying: unavailable.gntshr ?? .closed)
        }
        return gntshr
    }

    /// The grant table, or the error that says why there is none.
    func requireGrantTable() throws(VchanError) -> any UnmapNotifyingGrantTable {
        guard let grantTable else {
            throw .grant(op: "open \(XenGrantTable.device)", underlying: unavailable.grantTable ?? .closed)
        }
        return grantTable
    }

    /// This domain's id: the configured one, else xenstore's relative `domid` node.
    ///
    /// OCaml: `Xs.(immediate c (fun h -> read h "domid"))` in `Vchan.Xenstore`
    func resolveLocalDomain() async throws(VchanError) -> DomainID {
        if let localDomain { return localDomain }
        let text: String
        do throws(XenStoreError) {
            text = try await xenstore.immediate { handle throws(XenStoreError) in try await handle.read("domid") }
        } catch {
            throw .xenstore(op: "read", path: "domid", underlying: error)
        }
        guard let raw = UInt16(text) else { throw .invalidValue(path: "domid", value: text) }
        return DomainID(raw)
    }
}

/// How patient and how watchful an endpoint is. The defaults wait as long as libxenvchan does (forever for
/// data and room) but re-check the shared page every second even without an event.
///
/// OCaml: none (ocaml-vchan has no timeouts)
public struct VchanOptions: Sendable {
    /// How often a waiting read or write looks at the shared page even without an event, or nil to rely on
    /// events alone. A peer that never sends events still gets its bytes moved, one look per interval.
    public var recheckInterval: Duration?
    /// How long a write may wait for room that never comes (or a server for a client that never connects)
    /// before the peer is declared stalled (``VchanError/peerStalled(waited:)``) and the vchan closed. Nil:
    /// wait forever, as libxenvchan does.
    public var stallTimeout: Duration?
    /// How long a client waits for the server's xenstore entries, or nil for as long as it takes.
    public var connectTimeout: Duration?
    /// Whether to watch `@releaseDomain` and fail with ``VchanError/peerDied(_:)`` when a peer in another
    /// domain is destroyed (its kernel can no longer tell us). xenstored grants this to privileged domains
    /// only; a guest endpoint relies on ``stallTimeout`` instead.
    public var watchPeerDomain: Bool
    /// The rendezvous directory, or nil for `/local/domain/<server>/data/vchan/<client>/<port>` (the Qubes
    /// and ocaml-vchan convention; libxenvchan and `vchan-socket-proxy` take any path).
    public var xenstorePath: String?

    /// The defaults: re-check every second, no stall or connect limit, watch the peer's domain.
    ///
    /// OCaml: none
    public init(
        recheckInterval: Duration? = .seconds(1), stallTimeout: Duration? = nil, connectTimeout: Duration? = nil,
        watchPeerDomain: Bool = true, xenstorePath: String? = nil
    ) {
        self.recheckInterval = recheckInterval
        self.stallTimeout = stallTimeout
        self.connectTimeout = connectTimeout
        self.watchPeerDomain = watchPeerDomain
        self.xenstorePath = xenstorePath
    }
}
