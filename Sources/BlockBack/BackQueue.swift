import BlkifProtocol
import BlockDevice
import EventChannel
import GrantTable
import SharedRing
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// One queue of a backend: it consumes requests from a ring the frontend shares, runs them concurrently on
/// the device, and answers each one. Every request is copied out of the ring once and validated; anything
/// wrong gets an error response. A frontend that corrupts the ring indices stops the queue.
///
/// OCaml: the request loop of `Blkback.service_thread`
final class BackQueue: Sendable {
    private struct State {
        /// The ring, until ``close()`` drops it (with it the last view of the ring mapping).
        var ring: BackRing?
        var broken: String?
        var persistent: [GrantRef: GrantMappingHandle] = [:]
    }

    let port: EventChannelPort
    let ringMapping: GrantMappingHandle
    private let context: BackContext
    private let state: Mutex<State>

    init(ring: BackRing, ringMapping: GrantMappingHandle, port: EventChannelPort, context: BackContext) {
        self.port = port
        self.ringMapping = ringMapping
        self.context = context
        self.state = Mutex(State(ring: ring))
    }

    /// Why the queue stopped, if the frontend broke the ring.
    var brokenReason: String? { state.withLock { $0.broken } }

    /// Serves until the port is unbound, then waits for requests in flight.
    func run() async {
        await withDiscardingTaskGroup { group in
            for request in drain() { group.addTask { await self.serve(request) } }
            for await _ in context.events.notifications(port) {
                for request in drain() { group.addTask { await self.serve(request) } }
            }
        }
    }

    /// Copies out every published request (decoding each copy), stopping on bad indices.
    private func drain() -> [Result<BlkifRequest, BlkifDecodeError>] {
        let maxIndirect = context.options.maxIndirectSegments
        let (requests, broken) = state.withLock { state -> ([Result<BlkifRequest, BlkifDecodeError>], String?) in
            guard state.broken == nil, state.ring != nil else { return ([], nil) }
            var requests: [Result<BlkifRequest, BlkifDecodeError>] = []
            do {
                while true {
                    var available = try state.ring!.unconsumedRequests()
                    while available > 0 {
                        let slot = state.ring!.nextRequestSlot()
                        requests.append(
                            Result { () throws(BlkifDecodeError) in
                                try BlkifRequest.decode(copying: slot, maxIndirectSegments: max(maxIndirect, 1))
                            })
                        available -= 1
                    }
                    if try !state.ring!.finalCheckForRequests() { break }
                }
            } catch {
                state.broken = "\(error)"
                return (requests, state.broken)
            }
            return (requests, nil)
        }
        if let broken { context.onBroken(broken) }
        // Each request holds its ring slot until answered (`serve`).
        if !requests.isEmpty { context.metrics.inFlight.increment(by: Double(requests.count)) }
        return requests
    }

    private func serve(_ decoded: Result<BlkifRequest, BlkifDecodeError>) async {
        switch decoded {
        case .failure(let error):
            let (id, op) = Self.idAndOperation(of: error)
            respond(BlkifResponse(id: id, operation: op, status: .error))
            context.metrics.answered(.invalid, .error)
        case .success(let request):
            let status = await execute(request)
            let op: UInt8 =
                switch request {
                case .direct(let direct): direct.operation.rawValue
                // Linux blkback answers an indirect request with its inner operation, and Linux
                // blkfront refuses any other echo ("response has wrong operation (6 instead of 1)").
                case .indirect(let indirect): indirect.operation.rawValue
                case .discard: BlkifOperation.discard.rawValue
                }
            respond(BlkifResponse(id: request.id, operation: op, status: status))
            context.metrics.answered(BlockBackMetrics.Operation(request), status)
        }
    }

    private static func idAndOperation(of error: BlkifDecodeError) -> (UInt64, UInt8) {
        switch error {
        case .unknownOperation(let op, let id): (id, op)
        case .badSegmentCount(_, let id), .badSegment(_, _, _, let id), .unknownStatus(_, let id): (id, 0)
        case .truncated: (0, 0)
        }
    }

    private func respond(_ response: BlkifResponse) {
        let notify = state.withLock { state -> Bool in
            guard state.ring != nil, let slot = state.ring!.nextResponseSlot() else { return false }
            response.encode(into: slot)
            return state.ring!.pushResponses()
        }
        if notify { try? context.events.notify(port) }
    }

    // MARK: - Executing one request

    private func execute(_ request: BlkifRequest) async -> BlkifStatus {
        // The options' fields are read in place: a copy would retain their logger and metrics factory per request.
        switch request {
        case .discard(let discard):
            guard context.options.discard, context.discardSupported else { return .notSupported }
            guard context.info.readWrite else { return .error }
            guard let (sector, count) = context.deviceRange(unit: discard.sector, units: discard.sectorCount)
            else { return .error }
            do { try await context.device.discard(at: sector, count: count) } catch { return .error }
            return .okay
        case .direct(let direct):
            switch direct.operation {
            case .flushDiskCache:
                guard context.options.flush else { return .notSupported }
                do { try await context.device.flush() } catch { return .error }
                return .okay
            case .writeBarrier:
                guard context.options.barrier else { return .notSupported }
                do { try await context.device.flush() } catch { return .error }
                if direct.segments.isEmpty { return .okay }
                let status = await transfer(write: true, sector: direct.sector, segments: direct.segments)
                guard status == .okay else { return status }
                do { try await context.device.flush() } catch { return .error }
                return .okay
            case .read, .write:
                return await transfer(
                    write: direct.operation == .write, sector: direct.sector, segments: direct.segments)
            case .discard, .indirect, .reserved1:
                return .error
            }
        case .indirect(let indirect):
            guard context.options.maxIndirectSegments > 0 else { return .error }
            guard let segments = readIndirect(indirect) else { return .error }
            return await transfer(write: indirect.operation == .write, sector: indirect.sector, segments: segments)
        }
    }

    /// Maps each indirect page, copies its descriptors out once, unmaps it; nil when any step fails or a
    /// descriptor is invalid.
    private func readIndirect(_ request: BlkifIndirectRequest) -> [BlkifSegment]? {
        var segments: [BlkifSegment] = []
        segments.reserveCapacity(request.segmentCount)
        for (index, grant) in request.indirectGrants.enumerated() {
            let count = min(Blkif.segmentsPerIndirectPage, request.segmentCount - index * Blkif.segmentsPerIndirectPage)
            var pages = RequestPages()
            guard map(grant, writable: false, into: &pages) else { return nil }
            let decoded = BlkifSegment.decodeIndirect(from: pages.buffers[0], count: count)
            pages.release()
            guard let decoded, decoded.allSatisfy(\.isValid) else { return nil }
            segments += decoded
        }
        return segments
    }

    /// Maps the data pages, runs the I/O, unmaps (before the response is written).
    private func transfer(write: Bool, sector: UInt64, segments: [BlkifSegment]) async -> BlkifStatus {
        if write, !context.info.readWrite { return .error }
        let units = segments.reduce(UInt64(0)) { $0 + UInt64($1.sectorCount) }
        guard let (deviceSector, _) = context.deviceRange(unit: sector, units: units) else { return .error }
        var pages = RequestPages()
        pages.buffers.reserveCapacity(segments.count)
        // Persistent grants already mapped are looked up under one lock for the whole request.
        let cached: [PageBuffer?] =
            context.persistent
            ? state.withLock { state in segments.map { state.persistent[$0.grant]?.buffer } }
            : []
        for (index, segment) in segments.enumerated() {
            if index < cached.count, let buffer = cached[index] {
                pages.buffers.append(buffer)
            } else if !map(segment.grant, writable: !write, into: &pages) {
                pages.release()
                return .error
            }
        }
        let status = await perform(
            write: write, at: deviceSector, units: units,
            slices: zip(pages.buffers, segments).map { page, segment in
                page.slice(from: segment.byteOffset, count: segment.byteCount)
            })
        // The I/O is over and its views are gone: the per-request mappings can go before the response.
        pages.release()
        if status == .okay { context.metrics.transferred(write: write, Int(units) * Blkif.sectorUnit) }
        return status
    }

    /// Reads or writes the device through the request's page slices.
    private func perform(write: Bool, at deviceSector: UInt64, units: UInt64, slices: [PageBuffer]) async
        -> BlkifStatus
    {
        let sectorSize = context.info.sectorSize
        do {
            if slices.allSatisfy({ $0.count % sectorSize == 0 }) {
                if write {
                    try await context.device.write(at: deviceSector, from: slices)
                } else {
                    try await context.device.read(at: deviceSector, into: slices)
                }
            } else {
                // Segments smaller than a device sector: go through one contiguous bounce buffer.
                let total = Int(units) * Blkif.sectorUnit
                let bounce = PageBuffer(byteCount: total)
                if write {
                    PageBuffer.copy(from: slices, to: [bounce])
                    try await context.device.write(at: deviceSector, from: [bounce])
                } else {
                    try await context.device.read(at: deviceSector, into: [bounce])
                    PageBuffer.copy(from: [bounce], to: slices)
                }
            }
        } catch {
            return .error
        }
        return .okay
    }

    // MARK: - Grant mappings (persistent or per request)

    /// The pages one request maps: views for its I/O, and the per-request mappings (not persistent grants)
    /// to unmap once the I/O is done.
    struct RequestPages {
        var buffers: [PageBuffer] = []
        var transient: [GrantMappingHandle] = []

        /// Drops the views, then unmaps the per-request mappings.
        mutating func release() {
            buffers = []
            for handle in transient { try? handle.unmap() }
            transient = []
        }
    }

    /// Maps `ref` (a persistent grant is kept for later requests) and appends its page to `pages`.
    private func map(_ ref: GrantRef, writable: Bool, into pages: inout RequestPages) -> Bool {
        if context.persistent {
            if let cached = state.withLock({ $0.persistent[ref] }) {
                pages.buffers.append(cached.buffer)
                return true
            }
            // A persistent grant is mapped read-write once and kept (the frontend grants those pages writable).
            if let mapping = try? context.grants.map(domain: context.frontendDomain, ref: ref, writable: true) {
                let handle = GrantMappingHandle(mapping)
                let kept = state.withLock { state -> Bool in
                    guard state.persistent[ref] == nil,
                        state.persistent.count < context.options.maxPersistentGrantsPerQueue
                    else { return false }
                    state.persistent[ref] = handle
                    return true
                }
                pages.buffers.append(handle.buffer)
                if !kept { pages.transient.append(handle) }
                return true
            }
        }
        guard let mapping = try? context.grants.map(domain: context.frontendDomain, ref: ref, writable: writable)
        else { return false }
        let handle = GrantMappingHandle(mapping)
        pages.buffers.append(handle.buffer)
        pages.transient.append(handle)
        return true
    }

    /// Unmaps the ring and every persistent grant. Only after the port was unbound and `run` returned: no
    /// request is in flight, so the only views left are the ring's, dropped here first. Returns the unmaps
    /// that failed (a view kept elsewhere shows as `stillInUse`: that mapping goes with the view).
    func close() -> [GrantTableError] {
        let handles = state.withLock { state in
            defer {
                state.persistent.removeAll()
                state.ring = nil
            }
            return Array(state.persistent.values)
        }
        var failures: [GrantTableError] = []
        for handle in handles + [ringMapping] {
            do throws(GrantTableError) { try handle.unmap() } catch { failures.append(error) }
        }
        return failures
    }
}

/// What every queue of one backend connection shares.
struct BackContext: Sendable {
    let device: any BlockDevice
    let info: BlockDeviceInfo
    let options: BlockBackOptions
    let grants: any GrantTableBackend
    let events: any EventChannelBackend
    let frontendDomain: DomainID
    let persistent: Bool
    let discardSupported: Bool
    let metrics: BlockBackMetrics
    let onBroken: @Sendable (String) -> Void

    /// Converts a request's 512-byte-unit range to device sectors; nil when misaligned or outside the disk.
    func deviceRange(unit: UInt64, units: UInt64) -> (UInt64, UInt64)? {
        let perSector = UInt64(info.sectorSize / Blkif.sectorUnit)
        guard unit % perSector == 0, units % perSector == 0 else { return nil }
        let sector = unit / perSector
        let count = units / perSector
        let (end, overflow) = sector.addingReportingOverflow(count)
        guard !overflow, end <= info.sizeSectors else { return nil }
        return (sector, count)
    }
}
