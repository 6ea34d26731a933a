/// What one connection may carry in each direction, decided by both ends' keys. Both ends compute the same
/// value from the same keys, so neither sends what the other cannot take.
///
/// OCaml: mirage-net-xen keeps two halves of one feature (`peer_accepts_gso_v4`, `accepts_gso_v4`); this is
/// the whole table
public struct NetifNegotiated: Sendable, Equatable {
    /// Queues in use (`multi-queue-num-queues`).
    public var queues: Int
    /// Separate tx and rx event channels per queue.
    public var splitEventChannels: Bool
    /// Frontend → backend: frames may span several tx slots (the backend's `feature-sg`).
    public var txScatterGather: Bool
    /// Frontend → backend: GSO types the backend accepts (none without its scatter-gather).
    public var txGSO: Set<NetifGSOType>
    /// Frontend → backend: IPv4 frames may carry blank checksums (unless the backend wrote
    /// `feature-no-csum-offload`).
    public var txChecksumOffloadIPv4: Bool
    /// Frontend → backend: IPv6 frames may carry blank checksums (the backend's `feature-ipv6-csum-offload`).
    public var txChecksumOffloadIPv6: Bool
    /// Backend → frontend: frames may span several rx slots (the frontend's `feature-sg`).
    public var rxScatterGather: Bool
    /// Backend → frontend: GSO types the frontend accepts (none without its scatter-gather).
    public var rxGSO: Set<NetifGSOType>
    /// Backend → frontend: IPv4 frames may carry blank checksums (unless the frontend wrote
    /// `feature-no-csum-offload`).
    public var rxChecksumOffloadIPv4: Bool
    /// Backend → frontend: IPv6 frames may carry blank checksums (the frontend's `feature-ipv6-csum-offload`).
    public var rxChecksumOffloadIPv6: Bool
    /// The frontend notifies when it posts rx requests (`feature-rx-notify`); otherwise the backend polls.
    public var rxNotify: Bool
    /// The backend filters multicast frames to the frontend's list (`feature-multicast-control` and
    /// `request-multicast-control`).
    public var multicastControl: Bool

    /// The table for `backend`'s offer and `frontend`'s request.
    ///
    /// OCaml: `create_frontend ~peer_accepts_gso_v4` / `create_backend ~accepts_gso_v4`
    public init(backend: NetifBackendFeatures, frontend: NetifFrontendRequest) {
        queues = frontend.queues.count
        splitEventChannels = frontend.queues.contains { $0.rxEventChannel != nil }
        txScatterGather = backend.scatterGather
        // A GSO frame spans several slots: no scatter-gather, no GSO (Linux drops TSO without SG too).
        txGSO =
            backend.scatterGather
            ? Set([backend.gsoTCPv4 ? NetifGSOType.tcpv4 : nil, backend.gsoTCPv6 ? .tcpv6 : nil].compactMap { $0 })
            : []
        txChecksumOffloadIPv4 = !backend.noChecksumOffload
        txChecksumOffloadIPv6 = backend.ipv6ChecksumOffload
        rxScatterGather = frontend.scatterGather
        rxGSO =
            frontend.scatterGather
            ? Set([frontend.gsoTCPv4 ? NetifGSOType.tcpv4 : nil, frontend.gsoTCPv6 ? .tcpv6 : nil].compactMap { $0 })
            : []
        rxChecksumOffloadIPv4 = !frontend.noChecksumOffload
        rxChecksumOffloadIPv6 = frontend.ipv6ChecksumOffload
        rxNotify = frontend.rxNotify
        multicastControl = backend.multicastControl && frontend.requestMulticastControl
    }

    /// The largest frame the frontend may transmit: 64 KiB with scatter-gather (and GSO for frames above the
    /// MTU), else what fits in one page.
    public func maxTxFrame(mtu: Int) -> Int {
        txScatterGather
            ? (txGSO.isEmpty ? min(Netif.maxFrameSize, mtu + Netif.ethernetHeaderSize) : Netif.maxFrameSize)
            : min(Netif.pageSize, mtu + Netif.ethernetHeaderSize)
    }

    /// The largest frame the backend may deliver to the frontend.
    public func maxRxFrame(mtu: Int) -> Int {
        rxScatterGather
            ? (rxGSO.isEmpty ? min(Netif.maxFrameSize, mtu + Netif.ethernetHeaderSize) : Netif.maxFrameSize)
            : min(Netif.pageSize, mtu + Netif.ethernetHeaderSize)
    }
}

/// The keys a toolstack writes for a vif and both ends read: the device's identity and link parameters.
///
/// OCaml: `Xenstore.read_frontend_mac`, `read_mtu`; Linux netback's `handle`, `mac`, `script` reads
public enum NetifDeviceKeys {
    /// `mac` (frontend and backend directories): the guest's address.
    public static let mac = "mac"
    /// `mtu` (frontend directory): absent means 1500.
    public static let mtu = "mtu"
    /// `handle` (both): the vif's device id.
    public static let handle = "handle"
    /// `hotplug-status` (backend): "connected" once the host side of the vif is plumbed (Linux netback defers
    /// its Connected state until it reads this).
    public static let hotplugStatus = "hotplug-status"
    /// `online` (backend): 0 when the toolstack is removing the device.
    public static let online = "online"
    /// `script` (backend): the hotplug script Linux netback insists on reading (any value).
    public static let script = "script"
    /// `carrier` (backend): "0" link down, "1" up, absent up.
    public static let carrier = "carrier"
}
