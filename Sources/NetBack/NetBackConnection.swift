import EventChannel
import GrantTable
import NetifProtocol
import NetworkDevice
import SharedRing
import XenCore
import Xenbus

/// One connection of a vif: the frontend's rings mapped, its channels bound, a task per port. The owner of
/// the ring mappings: ``close()`` unbinds, joins the tasks, drops the queues' ring views, then unmaps.
///
/// OCaml: the `Back` transport built by `Netif.create_backend` and its `Cleanup` stack
final class NetBackConnection: Sendable {
    let queues: [NetBackQueue]
    let negotiated: NetifNegotiated
    let request: NetifFrontendRequest
    private let mappings: [GrantMappingHandle]
    private let events: any EventChannelBackend
    private let tasks: [Task<Void, Never>]

    private init(
        queues: [NetBackQueue], negotiated: NetifNegotiated, request: NetifFrontendRequest,
        mappings: [GrantMappingHandle], events: any EventChannelBackend
    ) {
        self.queues = queues
        self.negotiated = negotiated
        self.request = request
        self.mappings = mappings
        self.events = events
        self.tasks = queues.flatMap { queue -> [Task<Void, Never>] in
            if queue.txPort == queue.rxPort {
                return [Task { await queue.run(port: queue.txPort, tx: true, rx: true) }]
            }
            return [
                Task { await queue.run(port: queue.txPort, tx: true, rx: false) },
                Task { await queue.run(port: queue.rxPort, tx: false, rx: true) },
            ]
        }
    }

    /// Reads the frontend's keys, maps its rings and binds its channels (all or nothing).
    static func open(
        frontendPath: String, frontendDomain: DomainID, store: any XenbusStore, grants: any GrantTableBackend,
        events: any EventChannelBackend, options: NetBackOptions, frames: FrameQueue, counters: NetworkCounters,
        metrics: NetBackMetrics, multicast: MulticastFilter, onBroken: @escaping @Sendable (String) -> Void
    ) async throws -> NetBackConnection {
        var keys = try await store.readKeys(NetifFrontendRequest.featureKeyNames, in: frontendPath)
        let count = (try? NetifKeyReader(keys).number("multi-queue-num-queues", default: 1)) ?? 1
        guard count >= 1, count <= options.features.maxQueues else {
            throw NetifKeyError.malformed(key: "multi-queue-num-queues", value: String(count))
        }
        for (key, value) in try await store.readKeys(
            NetifFrontendRequest.queueKeyNames(queues: count), in: frontendPath)
        {
            keys[key] = value
        }
        let request = try NetifFrontendRequest(keys: keys, offered: options.features)
        let negotiated = NetifNegotiated(backend: options.features, frontend: request)
        let limits = NetifTxAssembler.Limits(negotiated, multicastOffered: options.features.multicastControl)
        let copier = FrontendCopier(grants: grants, frontend: frontendDomain)
        let txGeometry = try SharedRingGeometry(entrySize: Netif.txEntrySize, pages: 1)
        let rxGeometry = try SharedRingGeometry(entrySize: Netif.rxEntrySize, pages: 1)
        var mappings: [GrantMappingHandle] = []
        var ports: [EventChannelPort] = []
        var queues: [NetBackQueue] = []
        do {
            for (index, queue) in request.queues.enumerated() {
                let tx = GrantMappingHandle(
                    try grants.map(domain: frontendDomain, ref: queue.txRingRef, writable: true))
                mappings.append(tx)
                let rx = GrantMappingHandle(
                    try grants.map(domain: frontendDomain, ref: queue.rxRingRef, writable: true))
                mappings.append(rx)
                let txPort = try events.bindInterdomain(remote: frontendDomain, remotePort: queue.txEventChannel)
                ports.append(txPort)
                var rxPort = txPort
                if let rxChannel = queue.rxEventChannel {
                    rxPort = try events.bindInterdomain(remote: frontendDomain, remotePort: rxChannel)
                    ports.append(rxPort)
                }
                queues.append(
                    NetBackQueue(
                        txRing: try BackRing(attaching: tx.buffer, geometry: txGeometry),
                        rxRing: try BackRing(attaching: rx.buffer, geometry: rxGeometry), txPort: txPort,
                        rxPort: rxPort,
                        negotiated: negotiated, limits: limits, events: events, copier: copier, frames: frames,
                        counters: counters, metrics: metrics, ringGauges: metrics.ringGauges(queue: index),
                        multicast: multicast,
                        completeBlankChecksums: options.completeBlankChecksums, onBroken: onBroken))
            }
        } catch {
            for port in ports { try? events.unbind(port) }
            for queue in queues { queue.close() }
            // Every view goes before the unmap.
            queues.removeAll()
            for mapping in mappings { try? mapping.unmap() }
            throw error
        }
        return NetBackConnection(
            queues: queues, negotiated: negotiated, request: request, mappings: mappings, events: events)
    }

    /// Unbinds the channels, joins the queue tasks, drops the ring views and unmaps the rings.
    func close() async {
        for queue in queues { queue.fail(.disconnected) }
        for queue in queues {
            try? events.unbind(queue.txPort)
            if queue.rxPort != queue.txPort { try? events.unbind(queue.rxPort) }
        }
        for task in tasks { await task.value }
        for queue in queues { queue.close() }
        for mapping in mappings { try? mapping.unmap() }
    }
}
