public import EventChannel
public import GrantTable
import NetifProtocol
import NetworkDevice
import SharedRing
import Synchronization
import XenCore
public import Xenbus

extension NetFront {
    /// Connects to the vif `id` (its handle, "0"): waits for the backend's InitWait (first leading a backend
    /// left Connected or Closing by an earlier frontend back through Closing and Closed), reads its
    /// features, grants rings and buffers, publishes them and goes Connected, then waits for the backend's
    /// Connected.
    ///
    /// OCaml: `Netif.connect` (`plug_frontend`)
    public static func connect(
        _ id: String, store: any XenbusStore, grants: any GrantTableBackend, events: any EventChannelBackend,
        options: NetFrontOptions
    ) async throws(NetFrontError) -> NetFront {
        guard let handle = UInt32(id) else { throw .unknownDevice(id) }
        let frontend = "/local/domain/\(options.domain)/device/\(options.deviceClass)/\(handle)"
        let link = StoreLink(store: store)
        guard let backend = try await link.read(frontend + "/backend") else {
            throw .unknownDevice("\(id): no \(frontend)/backend")
        }
        let backendIDText = try await link.read(frontend + "/backend-id") ?? "0"
        guard let backendID = UInt16(backendIDText) else {
            throw .badKey(.malformed(key: "backend-id", value: backendIDText), path: frontend)
        }
        let backendDomain = DomainID(backendID)
        let mac: MACAddress
        if let text = try await link.read(frontend + "/" + NetifDeviceKeys.mac) {
            guard let parsed = MACAddress(text.filter { $0 != "\0" }) else {
                throw .badKey(.malformed(key: NetifDeviceKeys.mac, value: text), path: frontend)
            }
            mac = parsed
        } else {
            mac = .local(seed: UInt64(options.domain.rawValue) << 16 | UInt64(handle & 0xFFFF))
        }
        let mtuKeys = try await link.readKeys([NetifDeviceKeys.mtu], in: frontend)
        let mtu: Int
        do throws(NetifKeyError) {
            mtu = try NetifKeyReader(mtuKeys).number(NetifDeviceKeys.mtu, default: Netif.defaultMTU)
        } catch { throw .badKey(error, path: frontend) }
        guard mtu >= 68, mtu <= Netif.maxFrameSize - Netif.ethernetHeaderSize else {
            throw .badKey(.malformed(key: NetifDeviceKeys.mtu, value: String(mtu)), path: frontend)
        }

        try await reachInitWait(frontend: frontend, backend: backend, link: link)
        let featureKeys = try await link.readKeys(NetifBackendFeatures.keyNames, in: backend)
        let features: NetifBackendFeatures
        do throws(NetifKeyError) { features = try NetifBackendFeatures(keys: featureKeys) } catch {
            throw .badKey(error, path: backend)
        }
        guard features.rxCopy else { throw .unsupportedBackend("\(backend) offers no feature-rx-copy") }

        let queueCount = max(1, min(options.queues, features.maxQueues))
        let split = options.splitEventChannels && features.splitEventChannels
        let pages: ExportedPages
        do {
            let sharer = try await PageExport.sharer(for: grants, preferring: options.gntshr, peer: backendDomain)
            pages = ExportedPages(grants: grants, sharer: sharer, backend: backendDomain)
        } catch { throw .resources("opening gntshr", underlying: error) }
        var setups: [QueueSetup] = []
        do {
            for _ in 0..<queueCount {
                setups.append(
                    try await QueueSetup.make(
                        pages: pages, events: events, backend: backendDomain, split: split, options: options))
            }
        } catch {
            for setup in setups { setup.unbind(events) }
            setups.removeAll()
            pages.release()
            throw .resources("granting the rings and binding their event channels", underlying: error)
        }
        var request = NetifFrontendRequest(queues: setups.map(\.request))
        request.scatterGather = options.scatterGather
        request.gsoTCPv4 = options.gsoTCPv4 && options.scatterGather
        request.gsoTCPv6 = options.gsoTCPv6 && options.scatterGather
        request.noChecksumOffload = options.noChecksumOffload
        request.ipv6ChecksumOffload = options.ipv6ChecksumOffload
        request.requestMulticastControl = options.multicastControl && features.multicastControl
        let negotiated = NetifNegotiated(backend: features, frontend: request)

        let frames = FrameQueue(capacity: options.frameQueueCapacity)
        let counters = NetworkCounters()
        let sink = ViolationSink()
        var queues: [NetFrontQueue] = []
        for (index, setup) in setups.enumerated() {
            queues.append(
                NetFrontQueue(
                    index: index, txRing: setup.txRing, rxRing: setup.rxRing, txPages: setup.txBuffers,
                    rxPages: setup.rxBuffers, txPort: setup.txPort, rxPort: setup.rxPort, events: events,
                    negotiated: negotiated, frames: frames, counters: counters,
                    completeBlankChecksums: options.completeBlankChecksums
                ) { why in sink.report(why) })
        }
        // Rx buffers are posted before Connected, as Linux xen-netfront does.
        for queue in queues { queue.drainRx() }
        do throws(NetFrontError) {
            var pairs = request.keys.map { (path: frontend + "/" + $0.0, value: $0.1) }
            pairs.append((frontend + "/" + NetifDeviceKeys.handle, String(handle)))
            try await link.write(pairs)
            try await link.write([(frontend + "/state", XenbusState.connected.xenstoreValue)])
            let state = try await link.waitForState(of: backend) { $0 != .initWait && $0 != .initialised }
            guard state == .connected else { throw NetFrontError.backendState(state, path: backend) }
        } catch {
            for queue in queues { queue.close() }
            for setup in setups { setup.unbind(events) }
            // Every view of the pages goes before they are revoked.
            queues.removeAll()
            setups.removeAll()
            pages.release()
            try? await store.write(frontend + "/state", XenbusState.closed.xenstoreValue)
            throw error
        }
        let front = NetFront(
            frontendPath: frontend, backendPath: backend, backendDomain: backendDomain, handle: handle, mac: mac,
            mtu: mtu, backendFeatures: features, negotiated: negotiated, store: store, events: events, queues: queues,
            pages: pages, frames: frames, counters: counters, closeTimeout: options.closeTimeout)
        sink.attach(front)
        front.start()
        return front
    }

    /// Brings the backend to InitWait: waits while it initialises, re-initialises a Closed one, and leads
    /// one still Connected or Closing (an earlier frontend's connection) through Closing and Closed first.
    private static func reachInitWait(frontend: String, backend: String, link: StoreLink) async throws(NetFrontError) {
        for _ in 0..<8 {
            let state = try await link.state(of: backend)
            switch VifFrontendStep(backend: state) {
            case .publish:
                return
            case .wait:
                _ = try await link.waitForState(of: backend) { $0 != state }
            case .reinitialise:
                try await link.write([(frontend + "/state", XenbusState.initialising.xenstoreValue)])
                _ = try await link.waitForState(of: backend) { $0 != .closed }
            case .resetBackend:
                try await link.write([(frontend + "/state", XenbusState.closing.xenstoreValue)])
                _ = try await link.waitForState(of: backend) { $0 == .closing || $0 == .closed }
                try await link.write([(frontend + "/state", XenbusState.closed.xenstoreValue)])
                _ = try await link.waitForState(of: backend) { $0 == .closed }
                try await link.write([(frontend + "/state", XenbusState.initialising.xenstoreValue)])
                _ = try await link.waitForState(of: backend) { $0 != .closed }
            case .fail:
                throw .backendState(nil, path: backend)
            }
        }
        throw .backendState(try await link.state(of: backend), path: backend)
    }

    // MARK: - Disconnect

    /// Fails writers with `.disconnected`, then Closing → wait for the backend's Closing or Closed → Closed →
    /// wait for its Closed (each wait bounded by the close timeout), unbinds the event channels, joins the
    /// queue tasks, drops the rings and revokes every page; the frames already received stay readable, then
    /// the sequence ends. A second call waits for the first to finish.
    ///
    /// OCaml: `Netif.disconnect`
    public func disconnect() async {
        guard markClosed() else { return await waitUntilReleased() }
        for queue in queues { queue.fail(.disconnected) }
        if let watcher = takeWatcher() {
            watcher.cancel()
            await watcher.value
        }
        let link = StoreLink(store: store)
        let backend = backendPath
        try? await link.write([(frontendPath + "/state", XenbusState.closing.xenstoreValue)])
        _ = try? await link.waitForState(of: backend, within: closeTimeout) { $0 == .closing || $0 == .closed }
        try? await link.write([(frontendPath + "/state", XenbusState.closed.xenstoreValue)])
        _ = try? await link.waitForState(of: backend, within: closeTimeout) { $0 == .closed }
        for queue in queues {
            try? events.unbind(queue.txPort)
            if queue.rxPort != queue.txPort { try? events.unbind(queue.rxPort) }
        }
        for task in takeTasks() { await task.value }
        // Writers still filling a tx page finish first: no view of a page outlives its share.
        await writers.close()
        for queue in queues { queue.close() }
        pages.release()
        frames.finish()
        markReleased()
    }
}

/// One queue's pages and ports while the connection is set up.
struct QueueSetup {
    var txRing: FrontRing
    var rxRing: FrontRing
    var txRef: GrantRef
    var rxRef: GrantRef
    var txBuffers: [ExportedPage]
    var rxBuffers: [ExportedPage]
    var txPort: EventChannelPort
    var rxPort: EventChannelPort

    var request: NetifFrontendRequest.Queue {
        .init(
            txRingRef: txRef, rxRingRef: rxRef, txEventChannel: txPort, rxEventChannel: txPort == rxPort ? nil : rxPort)
    }

    static func make(
        pages: ExportedPages, events: any EventChannelBackend, backend: DomainID, split: Bool, options: NetFrontOptions
    ) async throws -> QueueSetup {
        let rings = try await pages.export(2, writable: true)
        let txRing = try FrontRing(
            initialising: rings[0].page, geometry: try SharedRingGeometry(entrySize: Netif.txEntrySize, pages: 1))
        let rxRing = try FrontRing(
            initialising: rings[1].page, geometry: try SharedRingGeometry(entrySize: Netif.rxEntrySize, pages: 1))
        let txCount = max(Netif.minimumSlotsPerPacket, min(options.txBuffers, Int(txRing.size)))
        let rxCount = max(Netif.minimumSlotsPerPacket, min(options.rxBuffers, Int(rxRing.size)))
        let txBuffers = try await pages.export(txCount, writable: false)
        let rxBuffers = try await pages.export(rxCount, writable: true)
        let txPort = try events.bindUnboundPort(remote: backend)
        let rxPort: EventChannelPort
        do { rxPort = split ? try events.bindUnboundPort(remote: backend) : txPort } catch {
            try? events.unbind(txPort)
            throw error
        }
        return QueueSetup(
            txRing: txRing, rxRing: rxRing, txRef: rings[0].ref, rxRef: rings[1].ref, txBuffers: txBuffers,
            rxBuffers: rxBuffers, txPort: txPort, rxPort: rxPort)
    }

    func unbind(_ events: any EventChannelBackend) {
        try? events.unbind(txPort)
        if rxPort != txPort { try? events.unbind(rxPort) }
    }
}

/// Forwards a queue's protocol-violation report to its frontend (which does not exist yet when the queue is
/// built).
final class ViolationSink: Sendable {
    private struct Weak { weak var front: NetFront? }
    private let target = Mutex(Weak())
    func attach(_ front: NetFront) { target.withLock { $0.front = front } }
    func report(_ why: String) {
        target.withLock { $0.front }?.fail(.protocolViolation(why), reason: "backend broke the netif protocol: \(why)")
    }
}
