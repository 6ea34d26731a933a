public import XenCore

/// What a netif backend advertises in its directory before InitWait (netif.h's feature keys).
///
/// OCaml: `Features.t` as the backend writes it (`init_backend`); mirage writes only sg, gso-tcpv4, rx-copy,
/// rx-flip, rx-notify and smart-poll
public struct NetifBackendFeatures: Sendable, Equatable {
    /// `feature-sg`: accepts frames spread over several tx slots.
    public var scatterGather = true
    /// `feature-gso-tcpv4`: accepts TCPv4 frames larger than the MTU with a GSO descriptor.
    public var gsoTCPv4 = true
    /// `feature-gso-tcpv6`.
    public var gsoTCPv6 = true
    /// `feature-ipv6-csum-offload`: accepts IPv6 TCP/UDP frames with a blank checksum.
    public var ipv6ChecksumOffload = true
    /// `feature-no-csum-offload`: refuses IPv4 frames with a blank checksum (absent: accepts them).
    public var noChecksumOffload = false
    /// `feature-rx-copy`: copies received frames into the frontend's pages (the only mode served).
    public var rxCopy = true
    /// `feature-multicast-control`: filters multicast frames on `request-multicast-control`.
    public var multicastControl = true
    /// `feature-dynamic-multicast-control`: `request-multicast-control` may change while connected.
    public var dynamicMulticastControl = false
    /// `feature-split-event-channels`: accepts separate tx and rx event channels.
    public var splitEventChannels = true
    /// `multi-queue-max-queues` (1 when absent).
    public var maxQueues = 4

    /// Everything on, four queues.
    ///
    /// OCaml: `Features.supported`
    public init() {}

    /// The keys to write (names relative to the backend directory).
    ///
    /// OCaml: `Xenstore.write_features h path \`Server features`
    public var keys: [(String, String)] {
        [
            ("feature-sg", netifFlag(scatterGather)),
            ("feature-gso-tcpv4", netifFlag(gsoTCPv4)),
            ("feature-gso-tcpv6", netifFlag(gsoTCPv6)),
            ("feature-ipv6-csum-offload", netifFlag(ipv6ChecksumOffload)),
            ("feature-no-csum-offload", netifFlag(noChecksumOffload)),
            ("feature-rx-copy", netifFlag(rxCopy)),
            ("feature-rx-flip", "0"),
            ("feature-multicast-control", netifFlag(multicastControl)),
            ("feature-dynamic-multicast-control", netifFlag(dynamicMulticastControl)),
            ("feature-split-event-channels", netifFlag(splitEventChannels)),
            ("multi-queue-max-queues", String(maxQueues)),
        ]
    }

    /// Every key ``init(keys:)`` reads.
    public static let keyNames = [
        "feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6", "feature-ipv6-csum-offload",
        "feature-no-csum-offload", "feature-rx-copy", "feature-multicast-control",
        "feature-dynamic-multicast-control", "feature-split-event-channels", "multi-queue-max-queues",
    ]

    /// Reads the backend's keys (relative names); absent features are off, except as netif.h defaults them.
    ///
    /// OCaml: `Xenstore.read_features \`Server backend`
    public init(keys: [String: String]) throws(NetifKeyError) {
        let reader = NetifKeyReader(keys)
        scatterGather = try reader.flag("feature-sg")
        gsoTCPv4 = try reader.flag("feature-gso-tcpv4")
        gsoTCPv6 = try reader.flag("feature-gso-tcpv6")
        ipv6ChecksumOffload = try reader.flag("feature-ipv6-csum-offload")
        noChecksumOffload = try reader.flag("feature-no-csum-offload")
        rxCopy = try reader.flag("feature-rx-copy")
        multicastControl = try reader.flag("feature-multicast-control")
        dynamicMulticastControl = try reader.flag("feature-dynamic-multicast-control")
        splitEventChannels = try reader.flag("feature-split-event-channels")
        maxQueues = try reader.number("multi-queue-max-queues", default: 1)
        guard maxQueues >= 1, maxQueues <= 256 else {
            throw .malformed(key: "multi-queue-max-queues", value: String(maxQueues))
        }
    }
}

/// What a frontend asks for in its directory when it connects: what it can receive, and its rings.
///
/// OCaml: `S.frontend_configuration` (`tx_ring_ref`, `rx_ring_ref`, `event_channel`, `feature_requests`)
public struct NetifFrontendRequest: Sendable, Equatable {
    /// One queue's rings and event channels.
    ///
    /// OCaml: the ring fields of `S.frontend_configuration` (one queue only there)
    public struct Queue: Sendable, Equatable {
        /// `tx-ring-ref`.
        public var txRingRef: GrantRef
        /// `rx-ring-ref`.
        public var rxRingRef: GrantRef
        /// `event-channel` (or `event-channel-tx` when split).
        public var txEventChannel: EventChannelPort
        /// `event-channel-rx` when split, nil when one channel serves both rings.
        public var rxEventChannel: EventChannelPort?

        /// A queue.
        public init(
            txRingRef: GrantRef, rxRingRef: GrantRef, txEventChannel: EventChannelPort,
            rxEventChannel: EventChannelPort?
        ) {
            self.txRingRef = txRingRef
            self.rxRingRef = rxRingRef
            self.txEventChannel = txEventChannel
            self.rxEventChannel = rxEventChannel
        }
    }

    /// The queues (`multi-queue-num-queues` of them, under `queue-N/` when more than one).
    public var queues: [Queue]
    /// `request-rx-copy`: the backend copies into our pages (required: page flipping is not served).
    public var requestRxCopy = true
    /// `feature-rx-notify`: we notify when we post rx requests.
    public var rxNotify = true
    /// `feature-sg`: we accept frames spread over several rx slots.
    public var scatterGather = true
    /// `feature-gso-tcpv4`: we accept TCPv4 frames larger than the MTU with a GSO descriptor.
    public var gsoTCPv4 = true
    /// `feature-gso-tcpv6`.
    public var gsoTCPv6 = true
    /// `feature-no-csum-offload`: we refuse IPv4 frames with blank checksums.
    public var noChecksumOffload = false
    /// `feature-ipv6-csum-offload`: we accept IPv6 frames with blank checksums.
    public var ipv6ChecksumOffload = true
    /// `request-multicast-control`: filter multicast frames to the addresses we add.
    public var requestMulticastControl = false

    /// A request for `queues`, every feature on.
    public init(queues: [Queue]) { self.queues = queues }

    /// The keys to write (relative to the frontend directory).
    ///
    /// OCaml: `Xenstore.write_frontend_configuration`
    public var keys: [(String, String)] {
        var keys: [(String, String)] = [
            ("request-rx-copy", netifFlag(requestRxCopy)),
            ("feature-rx-notify", netifFlag(rxNotify)),
            ("feature-sg", netifFlag(scatterGather)),
            ("feature-gso-tcpv4", netifFlag(gsoTCPv4)),
            ("feature-gso-tcpv6", netifFlag(gsoTCPv6)),
            ("feature-no-csum-offload", netifFlag(noChecksumOffload)),
            ("feature-ipv6-csum-offload", netifFlag(ipv6ChecksumOffload)),
            ("request-multicast-control", netifFlag(requestMulticastControl)),
        ]
        // Written even for one queue: a count left by an earlier connection of the vif must not stand.
        keys.append(("multi-queue-num-queues", String(queues.count)))
        for (index, queue) in queues.enumerated() {
            let prefix = queues.count > 1 ? "queue-\(index)/" : ""
            keys.append((prefix + "tx-ring-ref", String(queue.txRingRef.rawValue)))
            keys.append((prefix + "rx-ring-ref", String(queue.rxRingRef.rawValue)))
            if let rx = queue.rxEventChannel {
                keys.append((prefix + "event-channel-tx", String(queue.txEventChannel.rawValue)))
                keys.append((prefix + "event-channel-rx", String(rx.rawValue)))
            } else {
                keys.append((prefix + "event-channel", String(queue.txEventChannel.rawValue)))
            }
        }
        return keys
    }

    /// The feature keys a backend reads before the queue keys.
    public static let featureKeyNames = [
        "request-rx-copy", "feature-rx-notify", "feature-sg", "feature-gso-tcpv4", "feature-gso-tcpv6",
        "feature-no-csum-offload", "feature-ipv6-csum-offload", "request-multicast-control",
        "multi-queue-num-queues",
    ]

    /// The queue key names for `queues` queues.
    public static func queueKeyNames(queues: Int) -> [String] {
        (0..<queues).flatMap { index -> [String] in
            let prefix = queues > 1 ? "queue-\(index)/" : ""
            return ["tx-ring-ref", "rx-ring-ref", "event-channel", "event-channel-tx", "event-channel-rx"].map {
                prefix + $0
            }
        }
    }

    /// Parses the frontend's keys, checked against what `backend` offered: a queue count above its maximum,
    /// split channels it did not offer, a missing ring or channel, or no `request-rx-copy` are errors (the
    /// backend refuses to connect, as Linux's `connect()` does).
    ///
    /// OCaml: `Xenstore.read_frontend_configuration`
    public init(keys: [String: String], offered backend: NetifBackendFeatures) throws(NetifKeyError) {
        let reader = NetifKeyReader(keys)
        let count: Int = try reader.number("multi-queue-num-queues", default: 1)
        guard count >= 1, count <= backend.maxQueues else {
            throw .malformed(key: "multi-queue-num-queues", value: reader.text("multi-queue-num-queues") ?? "")
        }
        var queues: [Queue] = []
        for index in 0..<count {
            let prefix = count > 1 ? "queue-\(index)/" : ""
            let tx = GrantRef(try reader.required(prefix + "tx-ring-ref", as: UInt32.self))
            let rx = GrantRef(try reader.required(prefix + "rx-ring-ref", as: UInt32.self))
            if reader.text(prefix + "event-channel-tx") != nil || reader.text(prefix + "event-channel-rx") != nil {
                guard backend.splitEventChannels else {
                    throw .malformed(key: prefix + "event-channel-tx", value: "split channels not offered")
                }
                let txPort = EventChannelPort(try reader.required(prefix + "event-channel-tx", as: UInt32.self))
                let rxPort = EventChannelPort(try reader.required(prefix + "event-channel-rx", as: UInt32.self))
                queues.append(Queue(txRingRef: tx, rxRingRef: rx, txEventChannel: txPort, rxEventChannel: rxPort))
            } else {
                let port = EventChannelPort(try reader.required(prefix + "event-channel", as: UInt32.self))
                queues.append(Queue(txRingRef: tx, rxRingRef: rx, txEventChannel: port, rxEventChannel: nil))
            }
        }
        self.queues = queues
        requestRxCopy = try reader.flag("request-rx-copy")
        guard requestRxCopy else {
            throw .malformed(key: "request-rx-copy", value: reader.text("request-rx-copy") ?? "(absent)")
        }
        rxNotify = try reader.flag("feature-rx-notify")
        scatterGather = try reader.flag("feature-sg")
        gsoTCPv4 = try reader.flag("feature-gso-tcpv4")
        gsoTCPv6 = try reader.flag("feature-gso-tcpv6")
        noChecksumOffload = try reader.flag("feature-no-csum-offload")
        ipv6ChecksumOffload = try reader.flag("feature-ipv6-csum-offload")
        requestMulticastControl = try reader.flag("request-multicast-control")
    }
}
