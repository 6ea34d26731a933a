import BlkifProtocol
import BlockDevice
public import EventChannel
public import GrantTable
import SharedRing
import Synchronization
import XenCore
public import Xenbus

extension BlockFront {
    /// Connects to the vbd `id` — a xenstore id ("51712") or a Linux name ("xvda", "/dev/xvda") — through the
    /// xenstore, grant table and event channels given (the simulator's, or Xen's), running blkif.h's whole
    /// handshake: wait for the backend's InitWait, read every feature, publish the rings and event channels
    /// (state Initialised), wait for the backend's Connected, read the disk, go Connected. A second connect to
    /// a device that is connected fails with ``BlockFrontError/alreadyConnected(path:)`` until the first one's
    /// ``disconnect()``. ``connect(device:options:)`` finds all of these itself.
    ///
    /// OCaml: `Blkfront.connect` (which skips Initialised and reads only four keys)
    public static func connect(
        _ id: String, store: any XenbusStore, grants: any GrantTableBackend, events: any EventChannelBackend,
        options: BlockFrontOptions
    ) async throws(BlockFrontError) -> BlockFront {
        guard let handle = VirtualDeviceNumber.parse(id) else { throw .unknownDevice(id) }
        let domain: DomainID
        if let given = options.domain { domain = given } else { domain = try await localDomain(store) }
        let frontend = "/local/domain/\(domain)/device/\(options.deviceClass)/\(handle)"
        // Held by the connection until its disconnect (or its end): one connect per device at a time.
        guard let claim = DeviceClaim.take(store: store.connectionIdentity, path: frontend) else {
            throw .alreadyConnected(path: frontend)
        }
        guard let backend = try await xenstoreStep(frontend, { try await store.read(frontend + "/backend") }) else {
            throw .unknownDevice("\(id): no \(frontend)/backend")
        }
        let backendIDText = try await xenstoreStep(frontend, { try await store.read(frontend + "/backend-id") }) ?? "0"
        guard let backendID = UInt16(backendIDText) else {
            throw .badKey(.malformed(key: "backend-id", value: backendIDText), path: frontend)
        }
        let backendDomain = DomainID(backendID)
        let current = try await xenstoreStep(frontend) { try await store.state(of: frontend) }
        // Another frontend (another process, another xenstore connection) holds the device.
        if current == .initialised || current == .connected { throw .alreadyConnected(path: frontend) }
        // Connecting again after a disconnect (state Closed): back to Initialising first, as xenbus does when
        // a frontend driver probes the device, so that the backend prepares for the reconnect.
        let reconnecting = current == .closed || current == .closing
        if reconnecting {
            try await xenstoreStep(frontend) {
                try await store.write(frontend + "/state", XenbusState.initialising.xenstoreValue)
            }
        }

        // 1 → 2: the backend publishes its features and goes to InitWait (from Closed, on a reconnect).
        let early = try await xenstoreStep(backend) {
            try await store.waitForState(of: backend, orGone: true) { state in
                reconnecting
                    ? state.rawValue >= XenbusState.initWait.rawValue
                        && state.rawValue <= XenbusState.connected.rawValue
                    : state.rawValue >= XenbusState.initWait.rawValue
            }
        }
        guard let early, early.rawValue <= XenbusState.connected.rawValue else {
            throw .backendState(early, path: backend)
        }
        let featureKeys = try await xenstoreStep(backend) {
            try await store.readKeys(BlkifBackendInfo.keyNames, in: backend)
        }
        let features: BlkifBackendInfo
        do { features = try BlkifBackendInfo(keys: featureKeys) } catch { throw .badKey(error, path: backend) }

        // 2 → 3: rings, grants, event channels.
        let order = max(0, min(options.maxRingPageOrder, features.maxRingPageOrder, 4))
        let queueCount = max(1, min(options.queues, features.maxQueues))
        let geometry: SharedRingGeometry
        do { geometry = try SharedRingGeometry(entrySize: Blkif.ringEntrySize, pages: 1 << order) } catch {
            throw .resources("ring geometry", underlying: error)
        }
        // Grant references for data pages: what the table has left after the rings, minus a margin for other
        // devices. A request never needs more than that, so the largest request is capped by it too.
        // Through gntshr the budget is the option's share of gntalloc's limit instead.
        let sharer: (any GntshrBackend)?
        do { sharer = try await PageExport.sharer(for: grants, preferring: options.gntshr, peer: backendDomain) } catch
        {
            throw .resources("opening gntshr", underlying: error)
        }
        let refBudget = max(
            2 * (Blkif.maxDirectSegments + Blkif.maxIndirectPages),
            sharer == nil
                ? min(8192, grants.refs.freeCount - queueCount * (1 << order) - 64) : options.maxSharedPages)
        let segments =
            features.maxIndirectSegments > Blkif.maxDirectSegments
            ? max(
                Blkif.maxDirectSegments,
                min(
                    features.maxIndirectSegments, options.maxIndirectSegments, Blkif.maxIndirectSegments,
                    refBudget - Blkif.maxIndirectPages))
            : Blkif.maxDirectSegments
        var rings: [FrontRingSetup] = []
        do {
            for _ in 0..<queueCount {
                var setup = FrontRingSetup()
                do {
                    if let sharer {
                        let share = SharedPagesHandle(
                            try sharer.sharePages(with: backendDomain, count: 1 << order, writable: true))
                        setup.share = share
                        setup.refs = share.refs
                        guard share.refs.count == 1 << order else {
                            throw BlockFrontError.resources("gntshr shared \(share.refs.count) ring page(s)")
                        }
                        setup.ring = try FrontRing(initialising: share.buffer, geometry: geometry)
                    } else {
                        let memory = grants.allocatePages(1 << order)
                        for page in memory.pages {
                            let ref = try await grants.refs.get()
                            setup.refs.append(ref)
                            try grants.grantAccess(ref, to: backendDomain, writable: true, page: page)
                        }
                        setup.ring = try FrontRing(initialising: memory, geometry: geometry)
                    }
                    setup.port = try events.bindUnboundPort(remote: backendDomain)
                } catch {
                    setup.release(grants: grants, events: events)
                    throw error
                }
                rings.append(setup)
            }
        } catch {
            for index in rings.indices { rings[index].release(grants: grants, events: events) }
            if let error = error as? BlockFrontError { throw error }
            throw .resources("granting the rings and binding their event channels", underlying: error)
        }
        let disk: BlkifBackendInfo
        do throws(BlockFrontError) {
            disk = try await publishAndWait(
                rings: rings.compactMap { setup in
                    setup.port.map { BlkifQueueInfo(ringRefs: setup.refs, eventChannel: $0) }
                }, order: order, persistent: options.persistentGrants, frontend: frontend, backend: backend,
                store: store)
        } catch {
            // Nothing was connected: give back the rings and ports and tell the backend we are gone.
            for index in rings.indices { rings[index].release(grants: grants, events: events) }
            try? await store.write(frontend + "/state", XenbusState.closed.xenstoreValue)
            throw error
        }
        // Linux xen-blkback (since 6.0) writes `feature-persistent` only when it connects, so both sides offer
        // first (as Linux xen-blkfront does) and the backend's Connected-time key decides.
        let persistent = options.persistentGrants && disk.persistent
        let units = UInt64(disk.sectorSize / Blkif.sectorUnit)
        let deviceInfo = BlockDeviceInfo(
            readWrite: disk.isWritable, sectorSize: disk.sectorSize, sizeSectors: disk.sectors / units)
        let negotiated = BlockFrontNegotiated(
            backend: BlkifBackendSummary(
                flush: disk.flushCache, barrier: disk.barrier, discard: disk.discard, persistent: disk.persistent,
                maxIndirectSegments: disk.maxIndirectSegments, maxRingPageOrder: disk.maxRingPageOrder,
                maxQueues: disk.maxQueues),
            ringPages: 1 << order, queues: queueCount, segmentsPerRequest: segments, persistentGrants: persistent)

        let violation = ViolationSink()
        var queues: [FrontQueue] = []
        for index in rings.indices {
            // Every setup in `rings` completed, so ring and port are set. The queue becomes the ring's only
            // holder: it drops the ring when it fails or disconnects, before the pages are released.
            guard let ring = rings[index].ring, let port = rings[index].port else { continue }
            rings[index].ring = nil
            queues.append(
                FrontQueue(index: index, ring: ring, ringRefs: rings[index].refs, port: port, events: events) { why in
                    violation.report(why)
                })
        }
        let front = BlockFront(
            frontendPath: frontend, backendPath: backend, backendDomain: backendDomain, handle: handle,
            deviceInfo: deviceInfo, negotiated: negotiated, store: store, grants: grants, events: events,
            queues: queues,
            pages: FrontDataPages(
                grants: grants, sharer: sharer, backend: backendDomain, persistent: persistent,
                capacity: max(segments + Blkif.maxIndirectPages, refBudget)),
            ringShares: rings.compactMap(\.share), claim: claim)
        violation.attach(front)
        front.startPolling()
        try await xenstoreStep(frontend) {
            try await store.write(frontend + "/state", XenbusState.connected.xenstoreValue)
        }
        return front
    }

    /// Connects to the vbd numbered `id` (BlockBack's `VirtualBlockDeviceNodes.deviceID`, e.g. 51712 for xvda).
    ///
    /// OCaml: `Blkfront.connect` (with `Device_number.to_xenstore_key` already applied)
    public static func connect(
        _ id: UInt32, store: any XenbusStore, grants: any GrantTableBackend, events: any EventChannelBackend,
        options: BlockFrontOptions
    ) async throws(BlockFrontError) -> BlockFront {
        try await connect(String(id), store: store, grants: grants, events: events, options: options)
    }

    /// Runs one xenstore step of the handshake, keeping its error (typed) with the path it concerned.
    private static func xenstoreStep<T>(
        _ path: String, _ body: () async throws -> T
    ) async throws(BlockFrontError) -> T {
        do { return try await body() } catch let error as BlockFrontError { throw error } catch {
            throw .xenstore(path: path, underlying: error)
        }
    }

    /// This domain's id: xenstore's relative `domid` node, as libxenvchan reads it.
    private static func localDomain(_ store: any XenbusStore) async throws(BlockFrontError) -> DomainID {
        guard let text = try await xenstoreStep("domid", { try await store.read("domid") }) else {
            throw .badKey(.missing(key: "domid"), path: "domid")
        }
        guard let raw = UInt16(text) else { throw .badKey(.malformed(key: "domid", value: text), path: "domid") }
        return DomainID(raw)
    }

    /// Publishes the transport keys with state Initialised, waits for the backend's Connected and reads the
    /// disk's keys.
    private static func publishAndWait(
        rings: [BlkifQueueInfo], order: Int, persistent: Bool, frontend: String, backend: String,
        store: any XenbusStore
    ) async throws(BlockFrontError) -> BlkifBackendInfo {
        let info = BlkifFrontendInfo(queues: rings, ringPageOrder: order, persistent: persistent)
        var pairs = info.keys.map { (path: frontend + "/" + $0.0, value: $0.1) }
        pairs.append((frontend + "/state", XenbusState.initialised.xenstoreValue))
        try await xenstoreStep(frontend) { try await store.write(pairs) }

        // 3 → 4: the backend maps the rings and publishes the disk.
        let state = try await xenstoreStep(backend) {
            try await store.waitForState(of: backend, orGone: true) { $0.rawValue >= XenbusState.connected.rawValue }
        }
        guard state == .connected else { throw .backendState(state, path: backend) }
        let diskKeys = try await xenstoreStep(backend) {
            try await store.readKeys(BlkifBackendInfo.keyNames, in: backend)
        }
        do { return try BlkifBackendInfo(keys: diskKeys) } catch { throw .badKey(error, path: backend) }
    }
}

/// One queue's ring while it is being built: released as a whole if any step fails.
struct FrontRingSetup {
    var refs: [GrantRef] = []
    var share: SharedPagesHandle?
    var ring: FrontRing?
    var port: EventChannelPort?

    /// Unbinds the port, drops the ring and ends the grants (or unshares the gntshr pages).
    mutating func release(grants: any GrantTableBackend, events: any EventChannelBackend) {
        if let port { try? events.unbind(port) }
        ring = nil
        if let share {
            try? share.unshare()
        } else {
            for ref in refs where (try? grants.endAccess(ref)) != nil { _ = grants.refs.put(ref) }
        }
    }
}

/// Forwards a queue's protocol-violation report to its frontend (which does not exist yet when the queue is
/// built).
final class ViolationSink: Sendable {
    private struct Weak { weak var front: BlockFront? }
    private let target = Mutex(Weak())
    func attach(_ front: BlockFront) { target.withLock { $0.front = front } }
    func report(_ why: String) { target.withLock { $0.front }?.recordViolation(why) }
}
