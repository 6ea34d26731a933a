import BackendTelemetry
import BlkifProtocol
import BlockDevice
import EventChannel
import GrantTable
import Logging
import SharedRing
import XenCore
import Xenbus

/// Why `VbdService.connect` failed: the machine's classification and the error `serve` throws.
struct VbdConnectError: Error {
    let failure: VbdConnectFailure
    let error: BlockBackError
}

extension VbdService {
    /// `VbdBackendAction.advertise`: learns the frontend's domain and the device, then writes the features,
    /// the device keys, `hotplug-status` and `offer` as the backend's state in one go.
    ///
    /// OCaml: `Blkback.run`'s feature and `sectors`/`info`/`sector-size` writes, then InitWait
    mutating func advertise(offering offer: XenbusState) async throws(BlockBackError) {
        let backendPath = backendPath
        let store = store
        let frontendIDText =
            try await xenstore(backendPath, { try await store.read(backendPath + "/frontend-id") }) ?? ""
        guard let id = UInt16(frontendIDText) else {
            throw .badKey(
                path: backendPath, underlying: BlkifKeyError.malformed(key: "frontend-id", value: frontendIDText))
        }
        frontendID = DomainID(id)
        let telemetry = BackendTelemetry(
            kind: "vbd", domain: frontendID, device: String(backendPath.split(separator: "/").last ?? ""),
            factory: options.metricsFactory, logger: logger)
        self.telemetry = telemetry
        logger = telemetry.logger
        info = await device.info()
        // The toolstack's `mode` key can make a writable device read-only for this guest.
        if let mode = try await xenstore(backendPath, { try await store.read(backendPath + "/mode") }), mode == "r" {
            info.readWrite = false
        }
        // The device says whether it discards; nothing is sent to it to find out.
        discardSupported = await device.supportsDiscard
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
        self.advertised = advertised

        var pairs = advertised.featureKeys.map { (path: backendPath + "/" + $0.0, value: $0.1) }
        pairs += advertised.deviceKeys.map { (path: backendPath + "/" + $0.0, value: $0.1) }
        pairs.append((backendPath + "/hotplug-status", "online"))
        // Offered as Connected (a frontend in Closed), the features and device keys are all here already when
        // the frontend sees it; its rings are mapped once it says Initialised, and requests it queues before
        // that wait in the ring.
        pairs.append((backendPath + "/state", offer.xenstoreValue))
        try await xenstore(backendPath) { try await store.write(pairs) }
    }

    /// `VbdBackendAction.connect`: reads and validates the frontend's keys, maps its rings, binds its event
    /// channels and starts one task per queue. On failure nothing stays mapped or bound.
    ///
    /// OCaml: `Blkback.run`'s ring-ref / event-channel reads, `Gntshr.map`, `Eventchn.bind_interdomain`
    mutating func connect() async throws(VbdConnectError) {
        guard let telemetry else { preconditionFailure("VbdBackendStateMachine connects only what it advertised") }
        let frontendInfo = try await readFrontendInfo()
        let persistent = options.persistentGrants && frontendInfo.persistent
        let stop = ringBreak
        let metrics = BlockBackMetrics(telemetry)
        let store = store
        let backendPath = backendPath
        let context = BackContext(
            device: device, info: info, options: options, grants: grants, events: events,
            frontendDomain: frontendID, persistent: persistent, discardSupported: discardSupported,
            metrics: metrics
        ) { [logger] why in
            if stop.fire(why) {
                metrics.peerDisconnects.increment()
                logger.debug("frontend broke its ring: disconnecting", metadata: ["reason": "\(why)"])
            }
            // Wakes the serve loop's wait, which then closes the connection.
            Task { try? await store.write(backendPath + "/state", XenbusState.closing.xenstoreValue) }
        }
        var queues: [BackQueue] = []
        do {
            let geometry = try SharedRingGeometry(
                entrySize: Blkif.ringEntrySize, pages: 1 << frontendInfo.ringPageOrder)
            for queue in frontendInfo.queues {
                let mapping = GrantMappingHandle(
                    try grants.mapv(domain: frontendID, refs: queue.ringRefs, writable: true))
                let ring: BackRing
                do { ring = try BackRing(attaching: mapping.buffer, geometry: geometry) } catch {
                    try? mapping.unmap()
                    throw error
                }
                let port: EventChannelPort
                do { port = try events.bindInterdomain(remote: frontendID, remotePort: queue.eventChannel) } catch {
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
            throw VbdConnectError(
                failure: .resources,
                error: .resources("mapping the rings and binding their event channels", underlying: error))
        }
        self.metrics = metrics
        self.persistent = persistent
        self.ringPages = 1 << frontendInfo.ringPageOrder
        self.queues = queues
        tasks = queues.map { queue in Task { await queue.run() } }
    }

    /// The frontend's keys: queue count and ring order first (they name the other keys), then the rings'
    /// references and event channels, validated against what was advertised.
    private func readFrontendInfo() async throws(VbdConnectError) -> BlkifFrontendInfo {
        let store = store
        let frontend = frontendPath
        do {
            var keys = try await xenstore(frontend) {
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
            let names = BlkifFrontendInfo.keyNames(queues: queueCount, ringPageOrder: order)
            for (key, value) in try await xenstore(frontend, { try await store.readKeys(names, in: frontend) }) {
                keys[key] = value
            }
            return try BlkifFrontendInfo(
                keys: keys, maxRingPageOrder: options.maxRingPageOrder, maxQueues: advertised.maxQueues)
        } catch let error as BlockBackError {
            throw VbdConnectError(failure: .xenstore, error: error)
        } catch {
            throw VbdConnectError(failure: .frontendKeys, error: .badKey(path: frontend, underlying: error))
        }
    }

    /// `VbdBackendAction.disconnect`: unbinding ends each queue's notifications and its `run` then waits for
    /// its requests in flight; once every task has ended (every request answered, no mapping in use) the
    /// rings are unmapped and the grants released. Failures are kept for `run` to report.
    ///
    /// OCaml: `Blkback.run`'s shutdown (`Eventchn.unbind`, `Gntshr.unmap_exn`)
    mutating func disconnect() async {
        for queue in queues { try? events.unbind(queue.port) }
        // Join before release: every request has been answered and no task touches a mapping any more.
        for task in tasks { await task.value }
        releaseFailures += queues.flatMap { $0.close() }
        queues = []
        tasks = []
    }
}
