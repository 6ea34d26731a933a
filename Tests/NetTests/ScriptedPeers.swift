import EventChannel
import GrantTable
import NetifProtocol
import SharedRing
import SimulatedHypervisor
import XenCore
import Xenbus

/// A frontend written by hand: it grants two ring pages and some buffers, binds one event channel, publishes
/// the keys and goes Connected, then lets a test put any bytes it likes on the rings.
final class ScriptedFrontend: @unchecked Sendable {
    // @unchecked: used from one test task at a time.
    let harness: NetHarness
    var tx: FrontRing
    var rx: FrontRing
    let txRef: GrantRef
    let rxRef: GrantRef
    let port: EventChannelPort
    let buffers: [(page: PageBuffer, ref: GrantRef)]
    private let ringMemory: PageBuffer

    init(_ harness: NetHarness, buffers count: Int = 4) async throws {
        self.harness = harness
        let grants = harness.frontDomain.grantTable
        let backend = harness.backDomain.id
        let memory = PageBuffer(pages: 2 + count)
        ringMemory = memory
        let refs = try await grants.refs.get(count: 2 + count)
        for (index, ref) in refs.enumerated() {
            try grants.grantAccess(
                ref, to: backend, writable: true, page: memory.slice(from: index * xenPageSize, count: xenPageSize))
        }
        txRef = refs[0]
        rxRef = refs[1]
        buffers = (0..<count).map { index in
            (memory.slice(from: (2 + index) * xenPageSize, count: xenPageSize), refs[2 + index])
        }
        tx = try FrontRing(
            initialising: memory.slice(from: 0, count: xenPageSize),
            geometry: try SharedRingGeometry(entrySize: Netif.txEntrySize, pages: 1))
        rx = try FrontRing(
            initialising: memory.slice(from: xenPageSize, count: xenPageSize),
            geometry: try SharedRingGeometry(entrySize: Netif.rxEntrySize, pages: 1))
        port = try harness.frontDomain.eventChannel.bindUnboundPort(remote: backend)
    }

    /// Publishes the rings and goes Connected (after the backend's InitWait).
    func connect() async throws {
        let store = harness.frontStore
        let front = harness.nodes.frontendPath
        _ = try await store.waitForState(of: harness.nodes.backendPath) { $0 == .initWait }
        let request = NetifFrontendRequest(
            queues: [.init(txRingRef: txRef, rxRingRef: rxRef, txEventChannel: port, rxEventChannel: nil)])
        try await store.write(request.keys.map { (front + "/" + $0.0, $0.1) })
        try await store.write(front + "/state", XenbusState.connected.xenstoreValue)
    }

    /// Writes one raw tx slot (12 bytes) and publishes it.
    func send(_ write: (PageBuffer) -> Void) throws {
        guard let slot = tx.nextRequestSlot() else { throw SharedRingError.badGeometry("tx ring full") }
        write(slot)
        _ = tx.pushRequests()
        try harness.frontDomain.eventChannel.notify(port)
    }

    /// Overwrites the shared `req_prod` of the tx ring (a lie about how many requests there are).
    func lieAboutTxProducer(_ value: UInt32) throws {
        ringMemory.setUInt32(value, at: 0)
        try harness.frontDomain.eventChannel.notify(port)
    }

    func state(_ state: XenbusState) async throws {
        try await harness.frontStore.write(harness.nodes.frontendPath + "/state", state.xenstoreValue)
    }
}

/// A backend written by hand: it advertises features and goes InitWait, maps whatever rings the frontend
/// publishes, goes Connected, then lets a test write any responses it likes.
final class ScriptedBackend: @unchecked Sendable {
    // @unchecked: used from one test task at a time.
    let harness: NetHarness
    var tx: BackRing!
    var rx: BackRing!
    var port: EventChannelPort = 0
    var rxPort: EventChannelPort = 0
    private var mappings: [GrantMappingHandle] = []

    init(_ harness: NetHarness) { self.harness = harness }

    /// Creates the vif nodes and advertises the features (InitWait).
    func advertise(_ features: NetifBackendFeatures = NetifBackendFeatures()) async throws {
        try await harness.nodes.create(in: harness.store)
        let back = harness.nodes.backendPath
        var pairs = features.keys.map { (path: back + "/" + $0.0, value: $0.1) }
        pairs.append((back + "/state", XenbusState.initWait.xenstoreValue))
        try await harness.store.write(pairs)
    }

    /// Waits for the frontend's Connected, maps its first queue's rings, binds its channel, goes Connected.
    func accept() async throws {
        let store = harness.store
        let front = harness.nodes.frontendPath
        _ = try await store.waitForState(of: front) { $0 == .connected }
        let keys = try await store.readKeys(
            NetifFrontendRequest.featureKeyNames + NetifFrontendRequest.queueKeyNames(queues: 1), in: front)
        let request = try NetifFrontendRequest(keys: keys, offered: NetifBackendFeatures())
        let queue = request.queues[0]
        let grants = harness.backDomain.grantTable
        let frontID = harness.frontDomain.id
        let txMapping = GrantMappingHandle(try grants.map(domain: frontID, ref: queue.txRingRef, writable: true))
        let rxMapping = GrantMappingHandle(try grants.map(domain: frontID, ref: queue.rxRingRef, writable: true))
        tx = try BackRing(
            attaching: txMapping.buffer, geometry: try SharedRingGeometry(entrySize: Netif.txEntrySize, pages: 1))
        rx = try BackRing(
            attaching: rxMapping.buffer, geometry: try SharedRingGeometry(entrySize: Netif.rxEntrySize, pages: 1))
        mappings.append(txMapping)
        mappings.append(rxMapping)
        port = try harness.backDomain.eventChannel.bindInterdomain(remote: frontID, remotePort: queue.txEventChannel)
        rxPort = port
        if let rxChannel = queue.rxEventChannel {
            rxPort = try harness.backDomain.eventChannel.bindInterdomain(remote: frontID, remotePort: rxChannel)
        }
        try await store.write(harness.nodes.backendPath + "/state", XenbusState.connected.xenstoreValue)
    }

    /// The rx requests the frontend has posted so far (consumed from the ring).
    func takeRxRequests() throws -> [(index: UInt32, request: NetifRxRequest)] {
        var taken: [(UInt32, NetifRxRequest)] = []
        var available = try rx.unconsumedRequests()
        while available > 0 {
            let index = rx.requestConsumer
            taken.append((index, NetifRxRequest.decode(from: rx.nextRequestSlot())))
            available -= 1
        }
        return taken
    }

    /// Writes one rx response slot and publishes it.
    func respondRx(_ response: NetifRxResponse) throws { try respondRx { response.encode(into: $0) } }

    /// Writes one raw rx response slot and publishes it.
    func respondRx(_ write: (PageBuffer) -> Void) throws {
        guard let slot = rx.nextResponseSlot() else { throw SharedRingError.badGeometry("no rx request to answer") }
        write(slot)
        _ = rx.pushResponses()
        try harness.backDomain.eventChannel.notify(rxPort)
    }

    /// Waits for a tx request and answers it with `response` (or a raw write).
    func answerTx(_ write: (NetifTxRequest, PageBuffer) -> Void) async throws {
        try await waitUntil { try self.tx.unconsumedRequests() > 0 }
        let request = NetifTxRequest.decode(from: tx.nextRequestSlot())
        guard let slot = tx.nextResponseSlot() else { return }
        write(request, slot)
        _ = tx.pushResponses()
        try harness.backDomain.eventChannel.notify(port)
    }

    /// Overwrites the shared `rsp_prod` of the rx ring.
    func lieAboutRxProducer(_ value: UInt32) throws {
        rx.memory.setUInt32(value, at: 8)
        try harness.backDomain.eventChannel.notify(rxPort)
    }

    func release() {
        tx = nil
        rx = nil
        for mapping in mappings { try? mapping.unmap() }
        mappings.removeAll()
    }
}
