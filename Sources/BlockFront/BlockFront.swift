import BlkifProtocol
public import BlockDevice
import EventChannel
import GrantTable
import SharedRing
import Synchronization
public import XenCore
import XenStoreClient
import Xenbus

#if canImport(Glibc)
    import Glibc
#endif

/// A Xen block frontend: a `BlockDevice` whose requests travel over blkif shared rings to a backend in
/// another domain (or the same one, on the simulated hypervisor).
///
/// It negotiates every feature blkif.h defines (multi-page rings, multi-queue, indirect descriptors over up
/// to 8 pages, persistent grants, flush, barrier, discard), accepts buffers of any whole number of sectors
/// (copied through granted pages), and keeps many requests in flight. The backend is untrusted. Its pages are
/// granted with `grantAccess`, or shared through gntshr where the grant table cannot export (dom0 userspace).
///
/// OCaml: `Blkfront` (`Blkfront.connect`, `Mirage_block.S`)
public final class BlockFront: BlockDevice {
    /// The frontend's xenstore directory.
    public let frontendPath: String
    /// The backend's xenstore directory.
    public let backendPath: String
    /// The backend's domain.
    public let backendDomain: DomainID
    /// The vbd handle (the xenstore id).
    public let handle: UInt32
    /// The device as the backend describes it.
    public let deviceInfo: BlockDeviceInfo
    /// The features in use.
    public let negotiated: BlockFrontNegotiated

    let store: any XenbusStore
    let grants: any GrantTableBackend
    let events: any EventChannelBackend
    let queues: [FrontQueue]
    let pages: FrontDataPages
    /// The rings' gntshr allocations (empty on the `grantAccess` path).
    let ringShares: [SharedPagesHandle]
    /// This connection's hold on the device: released by ``disconnect()`` (or when the frontend goes).
    let claim: DeviceClaim
    /// The xenstore client ``connect(device:options:)`` opened for this connection: closed by ``disconnect()``.
    let ownedClient = Mutex<XenStoreClient?>(nil)
    /// Requests between their start and their return: ``disconnect()`` releases the pages only after them.
    private let inFlight = InFlightCount()
    private let next = Atomic<Int>(0)
    private let closed = Mutex<(done: Bool, failure: BlockFrontError?)>((false, nil))
    private let pollers: Mutex<[Task<Void, Never>]> = Mutex([])
    private let backendWatcher: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(
        frontendPath: String, backendPath: String, backendDomain: DomainID, handle: UInt32,
        deviceInfo: BlockDeviceInfo, negotiated: BlockFrontNegotiated, store: any XenbusStore,
        grants: any GrantTableBackend, events: any EventChannelBackend, queues: [FrontQueue], pages: FrontDataPages,
        ringShares: [SharedPagesHandle] = [], claim: DeviceClaim
    ) {
        self.ringShares = ringShares
        self.claim = claim
        self.frontendPath = frontendPath
        self.backendPath = backendPath
        self.backendDomain = backendDomain
        self.handle = handle
        self.deviceInfo = deviceInfo
        self.negotiated = negotiated
        self.store = store
        self.grants = grants
        self.events = events
        self.queues = queues
        self.pages = pages
    }

    func startPolling() {
        let tasks = queues.map { queue in Task { await queue.run() } }
        pollers.withLock { $0 = tasks }
        // A backend that closes or vanishes under us fails everything in flight (nothing would answer it).
        let store = store
        let backend = backendPath
        let queues = queues
        let watcher = Task {
            let state = try? await store.waitForState(of: backend, orGone: true) {
                $0 == .closing || $0 == .closed
            }
            guard !Task.isCancelled, state != .some(.connected) else { return }
            for queue in queues { queue.fail(.disconnected) }
        }
        backendWatcher.withLock { $0 = watcher }
    }

    /// The protocol violation that disconnected the device, if any.
    public var failure: BlockFrontError? { closed.withLock { $0.failure } }

    func recordViolation(_ why: String) {
        let first = closed.withLock { state -> Bool in
            guard state.failure == nil else { return false }
            state.failure = .protocolViolation(why)
            return true
        }
        guard first else { return }
        for queue in queues {
            queue.fail(
                .io(
                    context: "backend broke the blkif protocol: \(why)",
                    underlying: BlockFrontError.protocolViolation(why)))
        }
        // The backend misbehaved: tell it we are leaving, without waiting for it.
        let store = store
        let path = frontendPath
        Task { try? await store.write(path + "/state", XenbusState.closing.xenstoreValue) }
    }

    // MARK: - BlockDevice

    /// OCaml: `Blkfront.get_info`
    public func info() async -> BlockDeviceInfo { deviceInfo }

    /// OCaml: `Blkfront.read`
    public func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        try await transfer(.read, at: sector, buffers: buffers)
    }

    /// OCaml: `Blkfront.write`
    public func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        guard deviceInfo.readWrite else { throw .isReadOnly }
        try await transfer(.write, at: sector, buffers: buffers)
    }

    /// Writes after every earlier write is durable (`BLKIF_OP_WRITE_BARRIER`); `.unimplemented` without
    /// `feature-barrier`.
    ///
    /// OCaml: none (not in mirage-block-xen); Linux `REQ_PREFLUSH|REQ_FUA` on a barrier backend
    public func writeBarrier(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        guard deviceInfo.readWrite else { throw .isReadOnly }
        guard negotiated.backend.barrier else { throw .unimplemented(operation: "write barrier") }
        try await transfer(.writeBarrier, at: sector, buffers: buffers)
    }

    /// `BLKIF_OP_FLUSH_DISKCACHE` (or an empty barrier); returns at once when the backend offers neither.
    ///
    /// OCaml: none (not in mirage-block-xen)
    public func flush() async throws(BlockError) {
        let operation: BlkifOperation
        if negotiated.backend.flush {
            operation = .flushDiskCache
        } else if negotiated.backend.barrier {
            operation = .writeBarrier
        } else {
            return
        }
        let handle = UInt16(truncatingIfNeeded: handle)
        let status = try await pickQueue().submit { id in
            .direct(BlkifDirectRequest(operation: operation, handle: handle, id: id, sector: 0, segments: []))
        }
        try check(status, operation: "\(operation)", sector: 0)
    }

    /// `BLKIF_OP_DISCARD` of `count` sectors; `.unimplemented` without `feature-discard`.
    ///
    /// OCaml: none (not in mirage-block-xen)
    public func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
        guard deviceInfo.readWrite else { throw .isReadOnly }
        guard negotiated.backend.discard else { throw .unimplemented(operation: "discard") }
        try deviceInfo.validate(sector: sector, count: count)
        let units = UInt64(deviceInfo.sectorSize / Blkif.sectorUnit)
        let handle = UInt16(truncatingIfNeeded: handle)
        let status = try await pickQueue().submit { id in
            .discard(
                BlkifDiscardRequest(handle: handle, id: id, sector: sector * units, sectorCount: count * units))
        }
        try check(status, operation: "DISCARD", sector: sector)
    }

    /// True when the backend advertised `feature-discard` (``discard(at:count:)`` sends `BLKIF_OP_DISCARD`).
    ///
    /// OCaml: none (not in mirage-block-xen; Linux blkfront: `info->feature_discard`)
    public var supportsDiscard: Bool { negotiated.backend.discard }

    // MARK: - Transfers

    func pickQueue() -> FrontQueue {
        queues.count == 1 ? queues[0] : queues[next.add(1, ordering: .relaxed).newValue % queues.count]
    }

    /// Splits the buffers into requests of at most `segmentsPerRequest` pages and runs them concurrently.
    private func transfer(_ operation: BlkifOperation, at sector: UInt64, buffers: [PageBuffer])
        async throws(BlockError)
    {
        // Counted before the check, so that a disconnect either sees this request or refuses it.
        inFlight.enter()
        defer { inFlight.leave() }
        if closed.withLock({ $0.done }) { throw .disconnected }
        let sectors = try deviceInfo.validate(sector: sector, buffers: buffers)
        let totalBytes = Int(sectors) * deviceInfo.sectorSize
        guard totalBytes > 0 else { return }
        let chunkBytes = negotiated.segmentsPerRequest * xenPageSize
        let startUnit = sector * UInt64(deviceInfo.sectorSize / Blkif.sectorUnit)
        if totalBytes <= chunkBytes {
            try await request(
                operation, unit: startUnit, spans: PageBuffer.slices(of: buffers, from: 0, count: totalBytes))
            return
        }
        let failures = await withTaskGroup(of: BlockError?.self) { group in
            for start in stride(from: 0, to: totalBytes, by: chunkBytes) {
                let length = min(chunkBytes, totalBytes - start)
                let unit = startUnit + UInt64(start / Blkif.sectorUnit)
                let pieces = PageBuffer.slices(of: buffers, from: start, count: length)
                group.addTask {
                    do throws(BlockError) {
                        try await self.request(operation, unit: unit, spans: pieces)
                        return nil
                    } catch { return error }
                }
            }
            var first: BlockError?
            for await failure in group where first == nil { first = failure }
            return first
        }
        if let failures { throw failures }
    }

    /// One ring request: grant pages, copy in (writes), submit, copy out (reads), release.
    private func request(_ operation: BlkifOperation, unit: UInt64, spans: [PageBuffer]) async throws(BlockError) {
        let bytes = spans.reduce(0) { $0 + $1.count }
        let pageCount = (bytes + xenPageSize - 1) / xenPageSize
        let indirect = pageCount > Blkif.maxDirectSegments
        let indirectPages =
            indirect ? (pageCount + Blkif.segmentsPerIndirectPage - 1) / Blkif.segmentsPerIndirectPage : 0
        let granted: [GrantedPage]
        do {
            granted = try await pages.take(pageCount + indirectPages, backendWrites: operation == .read)
        } catch {
            throw .io(context: "\(error)", underlying: error)
        }
        let data = Array(granted.prefix(pageCount))
        if operation != .read { PageBuffer.copy(from: spans, to: data.map(\.page)) }
        var segments: [BlkifSegment] = []
        segments.reserveCapacity(pageCount)
        for (index, page) in data.enumerated() {
            let inPage = min(xenPageSize, bytes - index * xenPageSize)
            segments.append(
                BlkifSegment(grant: page.ref, firstSector: 0, lastSector: UInt8(inPage / Blkif.sectorUnit - 1)))
        }
        let handle = UInt16(truncatingIfNeeded: handle)
        let make: @Sendable (UInt64) -> BlkifRequest
        if indirect {
            let descriptors = Array(granted.suffix(indirectPages))
            for (index, segment) in segments.enumerated() {
                let page = descriptors[index / Blkif.segmentsPerIndirectPage].page
                segment.encode(into: page, at: (index % Blkif.segmentsPerIndirectPage) * Blkif.segmentSize)
            }
            let grants = descriptors.map(\.ref)
            let count = segments.count
            make = { id in
                .indirect(
                    BlkifIndirectRequest(
                        operation: operation, segmentCount: count, handle: handle, id: id, sector: unit,
                        indirectGrants: grants))
            }
        } else {
            let direct = segments
            make = { id in
                .direct(
                    BlkifDirectRequest(operation: operation, handle: handle, id: id, sector: unit, segments: direct))
            }
        }
        let status: BlkifStatus
        do {
            status = try await pickQueue().submit(make)
        } catch {
            pages.abandon(granted)
            throw error
        }
        if status == .okay, operation == .read { PageBuffer.copy(from: data.map(\.page), to: spans) }
        pages.give(granted)
        try check(status, operation: "\(operation)", sector: unit)
    }

    private func check(_ status: BlkifStatus, operation: String, sector: UInt64) throws(BlockError) {
        switch status {
        case .okay: return
        case .notSupported: throw .unimplemented(operation: operation)
        case .error: throw .io(context: "backend \(backendPath) failed \(operation) at 512-byte sector \(sector)")
        }
    }

    // MARK: - Disconnect

    /// Fails requests in flight with `.disconnected`, then Closing → wait backend Closing/Closed → Closed,
    /// and releases the rings, grants and event channels — only once the queues' tasks and every request
    /// that was in flight have returned, so no task still touches a page that is released. Later calls fail
    /// with `.disconnected`.
    ///
    /// OCaml: `Blkfront.disconnect`
    public func disconnect() async {
        let first = closed.withLock { state -> Bool in
            defer { state.done = true }
            return !state.done
        }
        guard first else { return }
        for queue in queues { queue.fail(.disconnected) }
        if let watcher = backendWatcher.withLock({ $0 }) {
            watcher.cancel()
            await watcher.value
        }
        try? await store.write(frontendPath + "/state", XenbusState.closing.xenstoreValue)
        _ = try? await store.waitForState(of: backendPath, orGone: true) { $0 == .closing || $0 == .closed }
        try? await store.write(frontendPath + "/state", XenbusState.closed.xenstoreValue)
        _ = try? await store.waitForState(of: backendPath, orGone: true) { $0 == .closed }
        for queue in queues { try? events.unbind(queue.port) }
        for task in pollers.withLock({ $0 }) { await task.value }
        // Every request was failed above; wait until each has returned and dropped its pages.
        await inFlight.drained()
        pages.releaseAll()
        // gntshr revokes a share only once the backend unmapped it.
        for share in ringShares { try? share.unshare() }
        if ringShares.isEmpty {
            // A backend that still maps a ring page keeps it: its ref is leaked rather than reused.
            for queue in queues {
                for ref in queue.ringRefs where (try? grants.endAccess(ref)) != nil { _ = grants.refs.put(ref) }
            }
        }
        claim.release()
        if let client = ownedClient.withLock({ $0 }) { await client.close() }
    }
}
