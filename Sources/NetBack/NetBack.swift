import BackendTelemetry
public import EventChannel
public import GrantTable
import Logging
public import NetifProtocol
public import NetworkDevice
import Synchronization
public import XenCore
public import Xenbus

/// A Xen network backend for one vif: a `NetworkDevice` whose frames come from and go to the frontend in
/// another domain (Linux xen-netfront, or `NetFront`).
///
/// ``serve()`` runs the backend half of the xenbus handshake for as long as the vif exists, connection after
/// connection: it answers a frontend that closes before connecting, one that jumps to Closed, a runtime close
/// from either side (Closing, then Closed, never deleting the directory), and serves the next connection of
/// the same vif. Frames written while no frontend is connected fail with `.disconnected`; ``listen(headerSize:)``
/// spans every connection. The frontend is hostile: anything malformed on its rings ends that connection.
///
/// OCaml: `Netif.make_backend ~domid ~device_id` (one connection there) and `Mirage_net.S`
public final class NetBack: NetworkDevice {
    /// The backend's xenstore directory (`/local/domain/<self>/backend/vif/<guest>/<handle>`).
    public let backendPath: String
    /// The frontend's directory, from the backend's `frontend` key.
    public let frontendPath: String
    /// The guest.
    public let frontendDomain: DomainID
    /// The vif handle.
    public let handle: UInt32
    /// The backend's own address.
    ///
    /// OCaml: `Netif.mac` (backend ending: `read_backend_mac`)
    public let mac: MACAddress
    /// The guest's address (`mac`).
    ///
    /// OCaml: `Netif.frontend_mac`
    public let frontendMAC: MACAddress
    /// OCaml: `Netif.mtu`
    public let mtu: Int

    let store: any XenbusStore
    let grants: any GrantTableBackend
    let events: any EventChannelBackend
    let options: NetBackOptions
    let frames: FrameQueue
    let counters = NetworkCounters()
    /// `counters` as swift-metrics series, and the ring gauges.
    let metrics: NetBackMetrics
    /// `options.logger` with the vif's identity as metadata.
    let logger: Logger
    let multicast = MulticastFilter()
    let scratch = ScratchBuffers()
    let wakeup = Wakeup()
    let state = Mutex(ServeState())

    struct ServeState {
        var connection: NetBackConnection?
        var connections = 0
        var stopRequested = false
        /// The serve loop has seen the stop request.
        var stopNoticed = false
        var broken: String?
        var lastBreak: String?
        var serving = false
        var finished = false
        var forceStop = false
        var finishWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private init(
        backendPath: String, frontendPath: String, frontendDomain: DomainID, handle: UInt32, frontendMAC: MACAddress,
        mtu: Int, store: any XenbusStore, grants: any GrantTableBackend, events: any EventChannelBackend,
        options: NetBackOptions
    ) {
        self.backendPath = backendPath
        self.frontendPath = frontendPath
        self.frontendDomain = frontendDomain
        self.handle = handle
        self.mac = options.mac
        self.frontendMAC = frontendMAC
        self.mtu = mtu
        self.store = store
        self.grants = grants
        self.events = events
        self.options = options
        self.frames = FrameQueue(capacity: options.frameQueueCapacity)
        var logger = options.logger
        logger[metadataKey: "xen.path"] = .string(backendPath)
        let telemetry = BackendTelemetry(
            kind: "vif", domain: frontendDomain, device: String(handle), factory: options.metricsFactory,
            logger: logger)
        self.metrics = NetBackMetrics(telemetry)
        self.logger = telemetry.logger
        // A reader making room takes the frames held back on the current connection's rings.
        frames.setSpaceHandler { [weak self] in
            for queue in self?.state.withLock({ $0.connection?.queues }) ?? [] { queue.drainTx() }
        }
    }

    /// Reads the toolstack's keys of the vif at `backendPath` (`frontend`, `frontend-id`, `handle`, `mac`,
    /// the frontend's `mtu`) and makes the device; ``serve()`` then runs it.
    ///
    /// OCaml: `Netif.make_backend` (its first half: `read_backend_mac`, `read_frontend_mac`, `read_mtu`)
    public static func open(
        backendPath: String, store: any XenbusStore, grants: any GrantTableBackend, events: any EventChannelBackend,
        options: NetBackOptions
    ) async throws(NetBackError) -> NetBack {
        func xs<T>(_ path: String, _ body: () async throws -> T) async throws(NetBackError) -> T {
            do { return try await body() } catch let error as NetifKeyError { throw .badKey(error, path: path) } catch {
                throw .xenstore(path: path, underlying: error)
            }
        }
        let keys = try await xs(backendPath) {
            try await store.readKeys(
                ["frontend", "frontend-id", NetifDeviceKeys.handle, NetifDeviceKeys.mac], in: backendPath)
        }
        let reader = NetifKeyReader(keys)
        guard let frontend = reader.text("frontend") else {
            throw .badKey(.missing(key: "frontend"), path: backendPath)
        }
        let frontendID = try await xs(backendPath) { try reader.required("frontend-id", as: UInt16.self) }
        let handle = try await xs(backendPath) {
            try reader.number(
                NetifDeviceKeys.handle,
                default: UInt32(backendPath.split(separator: "/").last.flatMap { UInt32($0) } ?? 0))
        }
        guard let macText = reader.text(NetifDeviceKeys.mac), let frontendMAC = MACAddress(macText) else {
            throw .badKey(
                .malformed(key: NetifDeviceKeys.mac, value: reader.text(NetifDeviceKeys.mac) ?? "(absent)"),
                path: backendPath)
        }
        let mtu = try await xs(frontend) {
            try NetifKeyReader(try await store.readKeys([NetifDeviceKeys.mtu], in: frontend)).number(
                NetifDeviceKeys.mtu, default: Netif.defaultMTU)
        }
        guard mtu >= 68, mtu <= Netif.maxFrameSize - Netif.ethernetHeaderSize else {
            throw .badKey(.malformed(key: NetifDeviceKeys.mtu, value: String(mtu)), path: frontend)
        }
        return NetBack(
            backendPath: backendPath, frontendPath: frontend, frontendDomain: DomainID(frontendID), handle: handle,
            frontendMAC: frontendMAC, mtu: mtu, store: store, grants: grants, events: events, options: options)
    }

    // MARK: - State

    /// What the current connection negotiated (nil while none is up).
    public var negotiated: NetifNegotiated? { state.withLock { $0.connection?.negotiated } }

    /// Connections served so far.
    public var connectionCount: Int { state.withLock { $0.connections } }

    /// Why the last connection was ended by us (the frontend broke the protocol), if one was.
    public var lastBreak: String? { state.withLock { $0.lastBreak } }

    /// A queue of the current connection broke: close this connection (the frontend may connect again).
    func connectionBroke(_ why: String) {
        let first = state.withLock { state -> Bool in
            guard state.broken == nil else { return false }
            state.broken = why
            state.lastBreak = why
            return true
        }
        if first {
            metrics.peerDisconnects.increment()
            logger.debug("frontend broke the protocol: closing the connection", metadata: ["reason": "\(why)"])
            for queue in state.withLock({ $0.connection?.queues ?? [] }) { queue.fail(.protocolViolation(why)) }
            wakeup.signal()
        }
    }

    // MARK: - NetworkDevice

    /// 64 KiB when the frontend takes scatter-gather and GSO, else its MTU's frame (the MTU's while none is
    /// connected).
    ///
    /// OCaml: `Netif.max_frame_size`
    public var maxFrameSize: Int {
        (negotiated?.maxRxFrame(mtu: mtu)) ?? (mtu + Netif.ethernetHeaderSize)
    }

    /// Sends a frame to the frontend: copied into pages it posted, waiting for enough of them. Multicast
    /// frames the frontend did not subscribe to (with multicast control on) are counted in `txDropped`.
    ///
    /// OCaml: `Netif.write` (backend ending)
    public func write(
        size: Int, checksum: NetworkChecksum, gso: NetworkGSO?, fill: (PageBuffer) -> Int
    ) async throws(NetworkError) {
        guard let connection = state.withLock({ $0.connection }) else {
            counters.count(\.txDropped)
            metrics.txDropped.increment()
            throw .disconnected
        }
        let negotiated = connection.negotiated
        let limit = negotiated.maxRxFrame(mtu: mtu)
        guard size >= 0, size <= Netif.maxFrameSize else { throw .frameTooLarge(size: size, limit: limit) }
        let buffer = scratch.take(max(size, 1))
        defer { scratch.give(buffer) }
        let length = fill(buffer.slice(from: 0, count: size))
        guard length >= 0, length <= size else { throw .invalidLength(returned: length, size: size) }
        guard length > 0 else { return }
        let frame = buffer.slice(from: 0, count: length)
        if negotiated.multicastControl, length >= 6 {
            let destination = MACAddress(from: frame, at: 0)
            if destination.isMulticast, destination != .broadcast, !multicast.contains(destination) {
                counters.count(\.txDropped)
                metrics.txDropped.increment()
                return
            }
        }
        var gso = gso
        if gso == nil, length > mtu + Netif.ethernetHeaderSize { gso = NetworkGSO.derive(for: frame, mtu: mtu) }
        if let gso, !negotiated.rxGSO.contains(gso.type) {
            throw .unimplemented("the frontend takes no GSO \(gso.type)")
        }
        guard length <= limit || gso != nil else { throw .frameTooLarge(size: length, limit: limit) }
        var flags: NetifRxFlags = []
        if checksum == .blank || gso != nil {
            let layout = FrameLayout(frame)
            let offload =
                layout.map { $0.isIPv6 ? negotiated.rxChecksumOffloadIPv6 : negotiated.rxChecksumOffloadIPv4 } ?? false
            if offload || gso != nil {
                FrameChecksum.setPseudoHeader(frame)
                flags = [.checksumBlank, .dataValidated]
            } else if FrameChecksum.complete(frame) {
                flags = .dataValidated
            }
        } else if checksum == .validated {
            flags = .dataValidated
        }
        let extra = gso.map { NetifExtraInfo(.gso(size: UInt16(clamping: $0.segmentSize), type: $0.type, features: 0)) }
        let queue = connection.queues[FlowHash.queue(for: frame, count: connection.queues.count)]
        try await queue.transmit(
            frame, flags: flags, extra: extra, poll: negotiated.rxNotify ? nil : options.rxPollInterval)
        counters.sent(length)
        metrics.tx.frame(length)
    }

    /// OCaml: `Netif.listen` (backend ending)
    public func listen(headerSize: Int) -> NetworkFrames {
        NetworkFrames(queue: frames, headerSize: headerSize, counters: counters)
    }

    /// OCaml: `Netif.get_stats_counters`
    public var statistics: NetworkStatistics {
        let queues = state.withLock { $0.connection?.queues ?? [] }
        let use = queues.reduce((tx: 0, rx: 0)) { total, queue in
            let use = queue.ringUse
            return (total.tx + use.banked, total.rx + use.pending)
        }
        return counters.snapshot(txRingUse: use.tx, rxRingUse: use.rx)
    }

    /// OCaml: `Netif.reset_stats_counters`
    public func resetStatistics() { counters.reset() }
}

/// A one-slot wake-up for the serve loop: set from any task, consumed by the loop.
final class Wakeup: Sendable {
    private let state = Mutex<(pending: Bool, waiter: CheckedContinuation<Void, Never>?)>((false, nil))

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns once signalled (at once when a signal is pending), or when the task is cancelled.
    func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if state.pending || Task.isCancelled {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
