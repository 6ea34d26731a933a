public import XenCore

/// The transport parameters a frontend publishes for one queue: its ring pages and event channel.
///
/// OCaml: `Blkproto.RingInfo.t`
public struct BlkifQueueInfo: Sendable, Equatable {
    /// The grant of each ring page, in order.
    public var ringRefs: [GrantRef]
    /// The frontend's event channel port (an unbound port the backend binds to).
    public var eventChannel: EventChannelPort

    /// Parameters of one queue.
    public init(ringRefs: [GrantRef], eventChannel: EventChannelPort) {
        self.ringRefs = ringRefs
        self.eventChannel = eventChannel
    }
}

/// What a blkif frontend publishes before Initialised: queues, ring order, protocol, persistent grants.
///
/// OCaml: `Blkproto.RingInfo` (single queue, mirage also writes `state` in the same transaction)
public struct BlkifFrontendInfo: Sendable, Equatable {
    /// One entry per queue (`multi-queue-num-queues` of them when more than one).
    public var queues: [BlkifQueueInfo]
    /// log2 of the ring pages per queue (`ring-page-order`).
    public var ringPageOrder: Int
    /// The ABI (`protocol`).
    public var `protocol`: String
    /// `feature-persistent`: the frontend reuses granted pages.
    public var persistent: Bool

    /// Frontend parameters.
    public init(
        queues: [BlkifQueueInfo], ringPageOrder: Int, protocol: String = Blkif.protocolX86_64, persistent: Bool
    ) {
        self.queues = queues
        self.ringPageOrder = ringPageOrder
        self.protocol = `protocol`
        self.persistent = persistent
    }

    /// The keys to write (relative to the frontend directory): `ring-ref` when one page, else
    /// `ring-page-order` + `ring-refN`; under `queue-N/` when there are several queues.
    ///
    /// OCaml: `Blkproto.RingInfo.to_assoc_list`
    public var keys: [(String, String)] {
        var keys: [(String, String)] = [
            ("protocol", self.protocol), ("feature-persistent", persistent ? "1" : "0"),
        ]
        if ringPageOrder > 0 { keys.append(("ring-page-order", String(ringPageOrder))) }
        if queues.count > 1 { keys.append(("multi-queue-num-queues", String(queues.count))) }
        for (index, queue) in queues.enumerated() {
            let prefix = queues.count > 1 ? "queue-\(index)/" : ""
            if ringPageOrder == 0, let ref = queue.ringRefs.first {
                keys.append((prefix + "ring-ref", String(ref.rawValue)))
            } else {
                for (page, ref) in queue.ringRefs.enumerated() {
                    keys.append((prefix + "ring-ref\(page)", String(ref.rawValue)))
                }
            }
            keys.append((prefix + "event-channel", String(queue.eventChannel.rawValue)))
        }
        return keys
    }

    /// The key names a backend must read, given `multi-queue-num-queues` and `ring-page-order`.
    public static func keyNames(queues: Int, ringPageOrder: Int) -> [String] {
        var names: [String] = []
        for index in 0..<queues {
            let prefix = queues > 1 ? "queue-\(index)/" : ""
            if ringPageOrder == 0 { names.append(prefix + "ring-ref") }
            for page in 0..<(1 << ringPageOrder) { names.append(prefix + "ring-ref\(page)") }
            names.append(prefix + "event-channel")
        }
        return names
    }

    /// Parses the frontend's keys, checking them against what the backend offered. `keys` must hold
    /// `protocol`, `feature-persistent`, `ring-page-order`, `multi-queue-num-queues` and the names of
    /// ``keyNames(queues:ringPageOrder:)`` when present.
    ///
    /// OCaml: `Blkproto.RingInfo.of_assoc_list`
    public init(keys: [String: String], maxRingPageOrder: Int, maxQueues: Int) throws(BlkifKeyError) {
        func trimmed(_ key: String) -> String? { keys[key]?.trimmingCharacters(in: " \n\0") }
        let order: Int
        if let text = trimmed("ring-page-order") {
            guard let value = Int(text), value >= 0, value <= maxRingPageOrder else {
                throw .malformed(key: "ring-page-order", value: text)
            }
            order = value
        } else {
            order = 0
        }
        let queueCount: Int
        if let text = trimmed("multi-queue-num-queues") {
            guard let value = Int(text), value >= 1, value <= maxQueues else {
                throw .malformed(key: "multi-queue-num-queues", value: text)
            }
            queueCount = value
        } else {
            queueCount = 1
        }
        let proto = trimmed("protocol") ?? Blkif.protocolX86_64
        guard proto == Blkif.protocolX86_64 || proto == "native" else {
            throw .malformed(key: "protocol", value: proto)
        }
        var queues: [BlkifQueueInfo] = []
        for index in 0..<queueCount {
            let prefix = queueCount > 1 ? "queue-\(index)/" : ""
            var refs: [GrantRef] = []
            if order == 0, let text = trimmed(prefix + "ring-ref") {
                guard let ref = GrantRef(text) else { throw .malformed(key: prefix + "ring-ref", value: text) }
                refs = [ref]
            } else {
                for page in 0..<(1 << order) {
                    let key = prefix + "ring-ref\(page)"
                    guard let text = trimmed(key) else { throw .missing(key: key) }
                    guard let ref = GrantRef(text) else { throw .malformed(key: key, value: text) }
                    refs.append(ref)
                }
            }
            let key = prefix + "event-channel"
            guard let text = trimmed(key) else { throw .missing(key: key) }
            guard let port = EventChannelPort(text) else { throw .malformed(key: key, value: text) }
            queues.append(BlkifQueueInfo(ringRefs: refs, eventChannel: port))
        }
        self.queues = queues
        self.ringPageOrder = order
        self.protocol = proto
        self.persistent = (trimmed("feature-persistent").flatMap { Int($0) } ?? 0) != 0
    }
}
