public import BlkifProtocol
import BlockDevice
public import EventChannel
public import GrantTable
import SharedRing
import Synchronization
import XenCore

extension BlockFront {
    /// Connects to the vbd `id` — a xenstore id ("51712") or a Linux name ("xvda", "/dev/xvda") — running
    /// blkif.h's whole handshake: wait for the backend's InitWait, read every feature, publish the rings and
    /// event channels (state Initialised), wait for the backend's Connected, read the disk, go Connected.
    ///
    /// OCaml: `Blkfront.connect` (which skips Initialised and reads only four keys)
    public static func connect(
        _ id: String, store: any XenbusStore, grants: any GrantTableBackend, events: any EventChannelBackend,
        options: BlockFrontOptions
    ) async throws(BlockFrontError) -> BlockFront {
        guard let handle = VirtualDeviceNumber.parse(id) else { throw .unknownDevice(id) }
        let frontend = "/local/domain/\(options.domain)/device/vbd/\(handle)"
        func xs<T>(_ path: String, _ body: () async throws -> T) async throws(BlockFrontError) -> T {
            do { return try await body() } catch let error as BlockFrontError { throw error } catch {
                throw .xenstore(path: path, underlying: "\(error)")
            }
        }
        guard let backend = try await xs(frontend, { try await store.read(frontend + "/backend") }) else {
            throw .unknownDevice("\(id): no \(frontend)/backend")
        }
        let backendIDText = try await xs(frontend, { try await store.read(frontend + "/backend-id") }) ?? "0"
        guard let backendID = UInt16(backendIDText) else {
            throw .badKey(.malformed(key: "backend-id", value: backendIDText), path: frontend)
        }
        let backendDomain = DomainID(backendID)

        // 1 → 2: the backend publishes its features and goes to InitWait.
        let early = try await xs(backend) {
            try await store.waitForState(of: backend, orGone: true) { $0.rawValue >= XenbusState.initWait.rawValue }
        }
        guard let early, early.rawValue <= XenbusState.connected.rawValue else {
            throw .backendState(early, path: backend)
        }
        let featureKeys = try await xs(backend) { try await store.readKeys(BlkifBackendInfo.keyNames, in: backend) }
        let features: BlkifBackendInfo
        do { features = try BlkifBackendInfo(keys: featureKeys) } catch { throw .badKey(error, path: backend) }

        // 2 → 3: rings, grants, event channels.
        let order = max(0, min(options.maxRingPageOrder, features.maxRingPageOrder, 4))
        let queueCount = max(1, min(options.queues, features.maxQueues))
        let geometry: SharedRingGeometry
        do { geometry = try SharedRingGeometry(entrySize: Blkif.ringEntrySize, pages: 1 << order) } catch {
            throw .resources("\(error)")
        }
        let persistent = options.persistentGrants && features.persistent
        let segments =
            features.maxIndirectSegments > Blkif.maxDirectSegments
            ? min(features.maxIndirectSegments, options.maxIndirectSegments, Blkif.maxIndirectSegments)
            : Blkif.maxDirectSegments
        var rings: [(FrontRing, [GrantRef], EventChannelPort, PageBuffer)] = []
        do {
            for _ in 0..<queueCount {
                let memory = PageBuffer(pages: 1 << order)
                let ring = try FrontRing(initialising: memory, geometry: geometry)
                var refs: [GrantRef] = []
                for page in memory.pages {
                    let ref = try await grants.refs.get()
                    try grants.grantAccess(ref, to: backendDomain, writable: true, page: page)
                    refs.append(ref)
                }
                let port = try events.bindUnboundPort(remote: backendDomain)
                rings.append((ring, refs, port, memory))
            }
        } catch {
            for (_, refs, port, _) in rings {
                for ref in refs where (try? grants.endAccess(ref)) != nil { _ = grants.refs.put(ref) }
                try? events.unbind(port)
            }
            throw .resources("\(error)")
        }
        let info = BlkifFrontendInfo(
            queues: rings.map { BlkifQueueInfo(ringRefs: $0.1, eventChannel: $0.2) }, ringPageOrder: order,
            persistent: persistent)
        var pairs = info.keys.map { (path: frontend + "/" + $0.0, value: $0.1) }
        pairs.append((frontend + "/state", XenbusState.initialised.xenstoreValue))
        try await xs(frontend) { try await store.write(pairs) }

        // 3 → 4: the backend maps the rings and publishes the disk.
        let state = try await xs(backend) {
            try await store.waitForState(of: backend, orGone: true) { $0.rawValue >= XenbusState.connected.rawValue }
        }
        guard state == .connected else { throw .backendState(state, path: backend) }
        let diskKeys = try await xs(backend) { try await store.readKeys(BlkifBackendInfo.keyNames, in: backend) }
        let disk: BlkifBackendInfo
        do { disk = try BlkifBackendInfo(keys: diskKeys) } catch { throw .badKey(error, path: backend) }
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
        let queues = rings.enumerated().map { index, ring in
            FrontQueue(index: index, ring: ring.0, ringRefs: ring.1, port: ring.2, events: events) { why in
                violation.report(why)
            }
        }
        let front = BlockFront(
            frontendPath: frontend, backendPath: backend, backendDomain: backendDomain, handle: handle,
            deviceInfo: deviceInfo, negotiated: negotiated, store: store, grants: grants, events: events,
            queues: queues, pages: FrontDataPages(grants: grants, backend: backendDomain, persistent: persistent),
            ringPages: rings.map(\.3))
        violation.attach(front)
        front.startPolling()
        try await xs(frontend) { try await store.write(frontend + "/state", XenbusState.connected.xenstoreValue) }
        return front
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
