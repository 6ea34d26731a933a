import EventChannel
public import NetifProtocol
public import NetworkDevice
import Synchronization
public import XenCore
import Xenbus

#if canImport(Glibc)
    import Glibc
#endif

/// A Xen network frontend: a `NetworkDevice` whose frames travel over netif rings to a backend in another
/// domain (Linux xen-netback, or `NetBack` on the same simulated hypervisor).
///
/// It negotiates every netif feature that shapes the data path (scatter-gather, TCPv4/v6 GSO both ways,
/// checksum offload both ways, multiple queues, split event channels, multicast control), copies frames of
/// up to 64 KiB through pages granted once per connection, waits (never drops) when the ring is full, holds
/// received frames on the ring while the reader is behind, and treats the backend as hostile: a bad index,
/// id, size, offset or flag disconnects the device with the reason in ``failure``.
///
/// OCaml: `Netif` (mirage-net-xen's frontend ending, `Netif.connect`, `Mirage_net.S`)
public final class NetFront: NetworkDevice {
    /// The frontend's xenstore directory.
    public let frontendPath: String
    /// The backend's xenstore directory.
    public let backendPath: String
    /// The backend's domain.
    public let backendDomain: DomainID
    /// The vif handle.
    public let handle: UInt32
    /// OCaml: `Netif.mac`
    public let mac: MACAddress
    /// OCaml: `Netif.mtu`
    public let mtu: Int
    /// What the backend offered.
    public let backendFeatures: NetifBackendFeatures
    /// What this connection may carry each way.
    public let negotiated: NetifNegotiated

    let store: any XenbusStore
    let events: any EventChannelBackend
    let queues: [NetFrontQueue]
    let pages: ExportedPages
    let frames: FrameQueue
    let counters: NetworkCounters
    let scratch = ScratchBuffers()
    let closeTimeout: Duration
    private let closed = Mutex<(done: Bool, failure: String?)>((false, nil))
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let watcher = Mutex<Task<Void, Never>?>(nil)
    /// Writers inside ``write(size:checksum:gso:fill:)``: they may hold views of the shared tx pages, so the
    /// pages are revoked only once they have left.
    let writers = InFlightGate()
    private let released = Mutex<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init(
        frontendPath: String, backendPath: String, backendDomain: DomainID, handle: UInt32, mac: MACAddress, mtu: Int,
        backendFeatures: NetifBackendFeatures, negotiated: NetifNegotiated, store: any XenbusStore,
        events: any EventChannelBackend, queues: [NetFrontQueue], pages: ExportedPages, frames: FrameQueue,
        counters: NetworkCounters, closeTimeout: Duration
    ) {
        self.counters = counters
        self.frontendPath = frontendPath
        self.backendPath = backendPath
        self.backendDomain = backendDomain
        self.handle = handle
        self.mac = mac
        self.mtu = mtu
        self.backendFeatures = backendFeatures
        self.negotiated = negotiated
        self.store = store
        self.events = events
        self.queues = queues
        self.pages = pages
        self.frames = frames
        self.closeTimeout = closeTimeout
    }

    /// Starts the event loops and the watch on the backend's state.
    func start() {
        let started = queues.flatMap { queue -> [Task<Void, Never>] in
            if queue.txPort == queue.rxPort {
                return [Task { await queue.run(port: queue.txPort, tx: true, rx: true) }]
            }
            return [
                Task { await queue.run(port: queue.txPort, tx: true, rx: false) },
                Task { await queue.run(port: queue.rxPort, tx: false, rx: true) },
            ]
        }
        tasks.withLock { $0 = started }
        let queues = queues
        frames.setSpaceHandler { for queue in queues { queue.drainRx() } }
        // A backend that closes or vanishes under us ends the connection (nothing would answer).
        let store = store
        let backend = backendPath
        let task = Task { [weak self] in
            let state = try? await store.waitForState(of: backend, orGone: true) { $0 != .connected }
            guard !Task.isCancelled, let self else { return }
            self.fail(.disconnected, reason: "backend went to \(state.map(\.description) ?? "gone")")
        }
        watcher.withLock { $0 = task }
    }

    /// Marks the device closed; false when it already was.
    func markClosed() -> Bool {
        closed.withLock { state in
            defer { state.done = true }
            return !state.done
        }
    }

    func takeWatcher() -> Task<Void, Never>? { watcher.withLock { $0 } }

    /// Everything is released: wakes the callers of ``disconnect()`` that came second.
    func markReleased() {
        let waiters = released.withLock { state in
            state.done = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the first ``disconnect()`` has released everything.
    func waitUntilReleased() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = released.withLock { state -> Bool in
                if state.done { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    func takeTasks() -> [Task<Void, Never>] {
        tasks.withLock { tasks in
            defer { tasks.removeAll() }
            return tasks
        }
    }

    /// Why the device disconnected on its own (a protocol violation, or the backend leaving), if it did.
    public var failure: String? { closed.withLock { $0.failure } }

    /// Fails every writer, records why, and closes the connection in the background.
    func fail(_ error: NetworkError, reason: String) {
        let first = closed.withLock { state -> Bool in
            guard state.failure == nil, !state.done else { return false }
            state.failure = reason
            return true
        }
        guard first else { return }
        for queue in queues { queue.fail(error) }
        Task { await self.disconnect() }
    }

    // MARK: - NetworkDevice

    /// 64 KiB with scatter-gather and GSO, else the MTU's frame, capped by the pages of one queue.
    ///
    /// OCaml: `Netif.max_frame_size`
    public var maxFrameSize: Int {
        let capacity = queues.first.map { min($0.txCapacity.pages, $0.txCapacity.slots - 1) } ?? 0
        return min(negotiated.maxTxFrame(mtu: mtu), max(0, capacity) * xenPageSize)
    }

    /// OCaml: `Netif.write`
    public func write(
        size: Int, checksum: NetworkChecksum, gso: NetworkGSO?, fill: (PageBuffer) -> Int
    ) async throws(NetworkError) {
        if let failure = closed.withLock({ $0.done ? ($0.failure ?? "") : nil }) {
            throw failure.isEmpty ? .disconnected : .protocolViolation(failure)
        }
        guard writers.enter() else { throw .disconnected }
        defer { writers.leave() }
        let limit = maxFrameSize
        guard size >= 0, size <= limit else { throw .frameTooLarge(size: size, limit: limit) }
        let mayNeedExtra = gso != nil || size > mtu + Netif.ethernetHeaderSize
        if size <= xenPageSize, queues.count == 1 {
            // One page, one queue: the frame is written straight into the shared page. (With several queues
            // the queue depends on the frame's flow, known only once it is written: it goes through scratch.)
            let queue = queues[0]
            let reserved = mayNeedExtra ? 2 : 1
            let ids = try await queue.reserve(ids: 1, slots: reserved)
            guard let page = queue.txPage(ids[0]) else { throw .disconnected }
            let length = fill(page.slice(from: 0, count: size))
            do throws(NetworkError) {
                guard length >= 0, length <= size else { throw .invalidLength(returned: length, size: size) }
                guard length > 0 else { return queue.cancel(ids: ids, slots: reserved) }
                let (flags, extra) = try prepare(page.slice(from: 0, count: length), checksum: checksum, gso: gso)
                try queue.submit(ids: ids, size: length, flags: flags, extra: extra, reserved: reserved)
            } catch {
                queue.cancel(ids: ids, slots: reserved)
                throw error
            }
            counters.sent(length)
            return
        }
        let buffer = scratch.take(size)
        defer { scratch.give(buffer) }
        let length = fill(buffer)
        guard length >= 0, length <= size else { throw .invalidLength(returned: length, size: size) }
        guard length > 0 else { return }
        let frame = buffer.slice(from: 0, count: length)
        let (flags, extra) = try prepare(frame, checksum: checksum, gso: gso)
        let queue = queues[FlowHash.queue(for: frame, count: queues.count)]
        let count = Netif.slots(forFrameOf: length)
        let reserved = count + (extra == nil ? 0 : 1)
        let ids = try await queue.reserve(ids: count, slots: reserved)
        var pages: [PageBuffer] = []
        pages.reserveCapacity(ids.count)
        for id in ids {
            guard let page = queue.txPage(id) else {
                queue.cancel(ids: ids, slots: reserved)
                throw .disconnected
            }
            pages.append(page)
        }
        PageBuffer.copy(from: [frame], to: pages)
        do throws(NetworkError) {
            try queue.submit(ids: ids, size: length, flags: flags, extra: extra, reserved: reserved)
        } catch {
            queue.cancel(ids: ids, slots: reserved)
            throw error
        }
        counters.sent(length)
    }

    /// The tx flags and GSO descriptor for `frame`: blank checksums are offloaded where the backend takes
    /// them and filled in here otherwise; a frame above the MTU needs a GSO type the backend offered.
    private func prepare(
        _ frame: PageBuffer, checksum: NetworkChecksum, gso: NetworkGSO?
    ) throws(NetworkError) -> (NetifTxFlags, NetifExtraInfo?) {
        var gso = gso
        if gso == nil, frame.count > mtu + Netif.ethernetHeaderSize {
            gso = NetworkGSO.derive(for: frame, mtu: mtu)
            guard gso != nil else {
                throw .frameTooLarge(size: frame.count, limit: mtu + Netif.ethernetHeaderSize)
            }
        }
        if let gso, !negotiated.txGSO.contains(gso.type) {
            throw .unimplemented("GSO \(gso.type) not offered by the backend")
        }
        var flags: NetifTxFlags = []
        if checksum == .blank || gso != nil {
            let layout = FrameLayout(frame)
            let offload =
                layout.map { $0.isIPv6 ? negotiated.txChecksumOffloadIPv6 : negotiated.txChecksumOffloadIPv4 } ?? false
            if offload || gso != nil {
                FrameChecksum.setPseudoHeader(frame)
                flags = [.checksumBlank, .dataValidated]
            } else if FrameChecksum.complete(frame) {
                flags = .dataValidated
            }
        } else if checksum == .validated {
            flags = .dataValidated
        }
        let extra = gso.map {
            NetifExtraInfo(.gso(size: UInt16(clamping: $0.segmentSize), type: $0.type, features: 0))
        }
        return (flags, extra)
    }

    /// OCaml: `Netif.listen`
    public func listen(headerSize: Int) -> NetworkFrames {
        NetworkFrames(queue: frames, headerSize: headerSize, counters: counters)
    }

    /// OCaml: `Netif.get_stats_counters`
    public var statistics: NetworkStatistics {
        let use = queues.reduce((tx: 0, rx: 0)) { total, queue in
            let use = queue.ringUse
            return (total.tx + use.tx, total.rx + use.rx)
        }
        return counters.snapshot(txRingUse: use.tx, rxRingUse: use.rx)
    }

    /// OCaml: `Netif.reset_stats_counters`
    public func resetStatistics() { counters.reset() }

    // MARK: - Multicast control

    /// Adds `address` to the backend's multicast filter (a dummy request carrying an `MCAST_ADD`
    /// descriptor); throws `.unimplemented` when the backend offers no multicast control.
    ///
    /// OCaml: none (netif.h `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`; Windows' xenvif sends these)
    public func addMulticast(_ address: MACAddress) async throws(NetworkError) {
        try await multicast(.multicastAdd(address))
    }

    /// Removes `address` from the backend's multicast filter.
    ///
    /// OCaml: none (netif.h `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`)
    public func removeMulticast(_ address: MACAddress) async throws(NetworkError) {
        try await multicast(.multicastDelete(address))
    }

    private func multicast(_ kind: NetifExtraInfo.Kind) async throws(NetworkError) {
        guard backendFeatures.multicastControl else { throw .unimplemented("backend offers no multicast control") }
        if closed.withLock({ $0.done }) { throw .disconnected }
        guard writers.enter() else { throw .disconnected }
        defer { writers.leave() }
        let queue = queues[0]
        let ids = try await queue.reserve(ids: 1, slots: 2)
        do throws(NetworkError) {
            try queue.submit(ids: ids, size: 0, flags: [], extra: NetifExtraInfo(kind), reserved: 2)
        } catch {
            queue.cancel(ids: ids, slots: 2)
            throw error
        }
    }
}
