import BackendTelemetry
import BlkifProtocol
public import BlockDevice
public import EventChannel
public import GrantTable
import Logging
import SharedRing
import Synchronization
import XenCore
public import Xenbus

/// A Xen block backend: serves any `BlockDevice` to one frontend over blkif rings.
///
/// It advertises every feature of blkif.h (flush, barrier, discard, persistent grants, indirect descriptors,
/// multi-page rings, multi-queue), follows the whole xenbus handshake, and treats the frontend as hostile:
/// each request is copied out of the ring once and validated, grant mapping failures and bad ranges get
/// error responses, and mappings are released before the response is written.
///
/// OCaml: `Blkback.Make(...).run`
public enum BlockBack {
    /// Serves `device` at the backend directory `backendPath` until the frontend closes (or disappears) or the
    /// toolstack detaches the device (backend `state` set to Closing), then goes Closing → Closed and releases
    /// everything. Returns normally on a clean close; throws `.frontendBroke` (after the same release) when the
    /// frontend corrupted a ring. Called again on the same directory it waits for the
    /// frontend to reinitialise and serves the new connection (a guest reloading its driver).
    ///
    /// Logs through `options.logger` and counts in `options.metricsFactory` (the "Metrics" article).
    ///
    /// OCaml: `Blkback.run t name (domid, devid)`
    public static func serve(
        _ device: any BlockDevice, backendPath: String, store: any XenbusStore, grants: any GrantTableBackend,
        events: any EventChannelBackend, options: BlockBackOptions
    ) async throws(BlockBackError) {
        var logger = options.logger
        logger[metadataKey: "xen.path"] = .string(backendPath)
        do throws(BlockBackError) {
            try await serveConnection(
                device, backendPath: backendPath, store: store, grants: grants, events: events, options: options,
                logger: &logger)
        } catch {
            logger.debug("vbd stopped", metadata: ["error": "\(error)"])
            throw error
        }
    }

    /// ``serve(_:backendPath:store:grants:events:options:)`` once `logger` is set up; gives it the device's
    /// identity as soon as the frontend's domain is known.
    private static func serveConnection(
        _ device: any BlockDevice, backendPath: String, store: any XenbusStore, grants: any GrantTableBackend,
        events: any EventChannelBackend, options: BlockBackOptions, logger: inout Logger
    ) async throws(BlockBackError) {
        func xs<T>(_ path: String, _ body: () async throws -> T) async throws(BlockBackError) -> T {
            do { return try await body() } catch let error as BlockBackError { throw error } catch {
                throw .xenstore(path: path, underlying: error)
            }
        }
        guard let frontend = try await xs(backendPath, { try await store.read(backendPath + "/frontend") }) else {
            throw .badKey(path: backendPath, underlying: BlkifKeyError.missing(key: "frontend"))
        }
        // After a close the frontend may come back (a guest reloading its driver). Linux's xenbus leaves a
        // rebound frontend in Closed, so once the previous connection is closed on both sides the device is
        // offered again (see below for how); a frontend that says Initialising
        // is served at once (Linux blkback's "prepare for reconnect"). The toolstack taking the device offline
        // meanwhile ends it (then Closed, and nothing to serve). A frontend with no state yet is awaited (the
        // toolstack may write its nodes after starting us) while its domain's directory stands; gone with its
        // domain (`xl destroy`), there is nothing to serve.
        let domainDirectory = Self.domainDirectory(of: frontend)
        let ready = try await xs(frontend) {
            try await store.wait(
                watching: [frontend + "/state", backendPath + "/online"] + (domainDirectory.map { [$0] } ?? [])
            ) { () -> Bool? in
                if try await store.read(backendPath + "/online") == "0" { return false }
                guard let state = try await store.state(of: frontend) else {
                    guard let domainDirectory else { return false }
                    return try await store.read(domainDirectory) == nil ? false : nil
                }
                if state == .closed { return try await store.state(of: backendPath) == .closed ? true : nil }
                return state != .closing && state != .unknown ? true : nil
            }
        }
        let offeredToAClosedFrontend = try await xs(frontend) { try await store.state(of: frontend) } == .closed
        guard ready else {
            logger.debug("vbd offline or its frontend gone before connecting")
            try? await store.write(backendPath + "/state", XenbusState.closed.xenstoreValue)
            return
        }
        let frontendIDText = try await xs(backendPath, { try await store.read(backendPath + "/frontend-id") }) ?? ""
        guard let frontendID = UInt16(frontendIDText) else {
            throw .badKey(
                path: backendPath, underlying: BlkifKeyError.malformed(key: "frontend-id", value: frontendIDText))
        }
        let telemetry = BackendTelemetry(
            kind: "vbd", domain: DomainID(frontendID), device: String(backendPath.split(separator: "/").last ?? ""),
            factory: options.metricsFactory, logger: logger)
        logger = telemetry.logger
        var info = await device.info()
        // The toolstack's `mode` key can make a writable device read-only for this guest.
        if let mode = try await xs(backendPath, { try await store.read(backendPath + "/mode") }), mode == "r" {
            info.readWrite = false
        }
        let discardSupported = await probeDiscard(device)
        var advertised = BlkifBackendInfo()
        advertised.sectors = info.sizeSectors * UInt64(info.sectorSize / Blkif.sectorUnit)
        advertised.sectorSize = info.sectorSize
        advertised.physicalSectorSize = info.sectorSize
        advertised.info = info.readWrite ? 0 : Blkif.infoReadOnly
        advertised.barrier = options.barrier
        advertised.flushCache = options.flush
        advertised.discard = options.discard && discardSupported && info.readWrite
        advertised.discardGranularity = UInt64(info.sectorSize)
        advertised.persistent = options.persistentGrants
        advertised.maxIndirectSegments = min(options.maxIndirectSegments, Blkif.maxIndirectSegments)
        advertised.maxRingPageOrder = options.maxRingPageOrder
        advertised.maxQueues = max(1, options.maxQueues)

        // 1 → 2: features, then InitWait.
        var pairs = advertised.featureKeys.map { (path: backendPath + "/" + $0.0, value: $0.1) }
        pairs += advertised.deviceKeys.map { (path: backendPath + "/" + $0.0, value: $0.1) }
        pairs.append((backendPath + "/hotplug-status", "online"))
        // A frontend rebound from Closed (Linux blkfront after unbind/bind or rmmod/insmod) takes no notice of
        // InitWait: it connects when it sees the backend Connected (talk_to_blkback, then blkfront_connect),
        // and the features and device keys are all here already. Its rings are mapped once it says
        // Initialised; requests it queues before that wait in the ring.
        let offered: XenbusState = offeredToAClosedFrontend ? .connected : .initWait
        pairs.append((backendPath + "/state", offered.xenstoreValue))
        try await xs(backendPath) { try await store.write(pairs) }

        // 2 → 3: wait for the frontend's rings (a frontend we offered the device to in Closed may stay there:
        // keep waiting, as blkback does in InitWait), unless the toolstack takes the device away meanwhile.
        let frontState = try await xs(frontend) {
            try await store.wait(watching: [frontend + "/state", backendPath + "/online", backendPath + "/state"]) {
                () -> XenbusState? in
                if try await store.read(backendPath + "/online") == "0" { return .closed }
                if try await store.state(of: backendPath) == .closing { return .closed }
                guard let state = try await store.state(of: frontend) else { return .closed }
                switch state {
                case .initialised, .connected, .closing: return state
                case .closed: return offeredToAClosedFrontend ? nil : state
                default: return nil
                }
            }
        }
        guard frontState == .initialised || frontState == .connected else {
            logger.debug("vbd offline or its frontend closed before connecting", metadata: ["frontend": "\(frontend)"])
            try? await store.write(backendPath + "/state", XenbusState.closed.xenstoreValue)
            return
        }
        let frontendInfo: BlkifFrontendInfo
        do {
            var keys = try await xs(frontend) {
                try await store.readKeys(
                    ["protocol", "feature-persistent", "ring-page-order", "multi-queue-num-queues"], in: frontend)
            }
            let queueCount = Int(keys["multi-queue-num-queues"] ?? "1") ?? 1
            let order = Int(keys["ring-page-order"] ?? "0") ?? 0
            guard queueCount >= 1, queueCount <= advertised.maxQueues, order >= 0, order <= options.maxRingPageOrder
            else {
                throw BlkifKeyError.malformed(
                    key: "multi-queue-num-queues/ring-page-order", value: "\(queueCount)/\(order)")
            }
            for (key, value) in try await xs(
                frontend,
                {
                    try await store.readKeys(
                        BlkifFrontendInfo.keyNames(queues: queueCount, ringPageOrder: order), in: frontend)
                })
            { keys[key] = value }
            frontendInfo = try BlkifFrontendInfo(
                keys: keys, maxRingPageOrder: options.maxRingPageOrder, maxQueues: advertised.maxQueues)
        } catch let error as BlockBackError {
            throw error
        } catch {
            try? await store.write(backendPath + "/state", XenbusState.closing.xenstoreValue)
            throw .badKey(path: frontend, underlying: error)
        }

        // 3 → 4: map rings, bind event channels.
        let frontendDomain = DomainID(frontendID)
        let persistent = options.persistentGrants && frontendInfo.persistent
        let broken = Mutex<String?>(nil)
        let stop = AsyncStopSignal()
        let metrics = BlockBackMetrics(telemetry)
        let context = BackContext(
            device: device, info: info, options: options, grants: grants, events: events,
            frontendDomain: frontendDomain, persistent: persistent, discardSupported: discardSupported,
            metrics: metrics
        ) { [logger] why in
            let first = broken.withLock { broken -> Bool in
                defer { broken = broken ?? why }
                return broken == nil
            }
            if first {
                metrics.peerDisconnects.increment()
                logger.debug("frontend broke its ring: disconnecting", metadata: ["reason": "\(why)"])
            }
            stop.fire()
            // Wakes the wait below, which then shuts the connection down.
            Task { try? await store.write(backendPath + "/state", XenbusState.closing.xenstoreValue) }
        }
        var queues: [BackQueue] = []
        do {
            let geometry = try SharedRingGeometry(
                entrySize: Blkif.ringEntrySize, pages: 1 << frontendInfo.ringPageOrder)
            for queue in frontendInfo.queues {
                let mapping = GrantMappingHandle(
                    try grants.mapv(domain: frontendDomain, refs: queue.ringRefs, writable: true))
                let ring: BackRing
                do { ring = try BackRing(attaching: mapping.buffer, geometry: geometry) } catch {
                    try? mapping.unmap()
                    throw error
                }
                let port: EventChannelPort
                do { port = try events.bindInterdomain(remote: frontendDomain, remotePort: queue.eventChannel) } catch {
                    try? mapping.unmap()
                    throw error
                }
                queues.append(BackQueue(ring: ring, ringMapping: mapping, port: port, context: context))
            }
        } catch {
            for queue in queues {
                try? events.unbind(queue.port)
                _ = queue.close()
            }
            try? await store.write(backendPath + "/state", XenbusState.closing.xenstoreValue)
            throw .resources("mapping the rings and binding their event channels", underlying: error)
        }
        let tasks = queues.map { queue in Task { await queue.run() } }
        do {
            try await xs(backendPath) {
                try await store.write(backendPath + "/state", XenbusState.connected.xenstoreValue)
            }
            metrics.connections.increment()
            logger.debug(
                "vbd connected",
                metadata: [
                    "queues": "\(queues.count)", "ring-pages": "\(1 << frontendInfo.ringPageOrder)",
                    "persistent-grants": "\(persistent)",
                ])
            // Connected: wait for the frontend to close or vanish, or for a queue to break.
            _ = try await xs(frontend) {
                try await store.wait(watching: [frontend + "/state", backendPath + "/state"]) { () -> Bool? in
                    if stop.fired { return true }
                    // The toolstack detaching the device writes our state Closing (libxl's remove).
                    if try await store.state(of: backendPath) != .connected { return true }
                    let state = try await store.state(of: frontend)
                    return state == nil || state == .closing || state == .closed ? true : nil
                }
            }
        } catch {
            try? await shutDown(queues, tasks: tasks, backendPath: backendPath, store: store, events: events)
            throw error
        }
        try await shutDown(queues, tasks: tasks, backendPath: backendPath, store: store, events: events)
        if let reason = broken.withLock({ $0 }) { throw .frontendBroke(path: frontend, reason: reason) }
        logger.debug("vbd closed")
    }

    private static func shutDown(
        _ queues: [BackQueue], tasks: [Task<Void, Never>], backendPath: String, store: any XenbusStore,
        events: any EventChannelBackend
    ) async throws(BlockBackError) {
        do { try await store.write(backendPath + "/state", XenbusState.closing.xenstoreValue) } catch {
            throw .xenstore(path: backendPath, underlying: error)
        }
        // Unbinding ends each queue's notifications; `run` then waits for its requests in flight.
        for queue in queues { try? events.unbind(queue.port) }
        // Join before release: every request has been answered and no task touches a mapping any more.
        for task in tasks { await task.value }
        let failures = queues.flatMap { $0.close() }
        do { try await store.write(backendPath + "/state", XenbusState.closed.xenstoreValue) } catch {
            throw .xenstore(path: backendPath, underlying: error)
        }
        if !failures.isEmpty { throw .resources("releasing the frontend's grants: \(failures)") }
    }

    /// Whether `device` implements discard: a zero-length discard answers `.unimplemented` when it does not.
    /// `/local/domain/N` for a path below it (a frontend's domain directory), else nil.
    static func domainDirectory(of path: String) -> String? {
        let parts = path.split(separator: "/")
        guard parts.count > 3, parts[0] == "local", parts[1] == "domain", UInt16(parts[2]) != nil else { return nil }
        return "/local/domain/\(parts[2])"
    }

    private static func probeDiscard(_ device: any BlockDevice) async -> Bool {
        do {
            try await device.discard(at: 0, count: 0)
            return true
        } catch .unimplemented {
            return false
        } catch {
            return true
        }
    }
}

/// A one-shot flag that also pokes a xenstore wait: set when a queue breaks.
final class AsyncStopSignal: Sendable {
    private let flag = Atomic<Bool>(false)
    var fired: Bool { flag.load(ordering: .acquiring) }
    func fire() { flag.store(true, ordering: .releasing) }
}
