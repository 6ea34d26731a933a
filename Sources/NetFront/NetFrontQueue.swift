import EventChannel
import NetifProtocol
import NetworkDevice
import SharedRing
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// One queue of a frontend: a tx ring whose requests point at our tx pages, an rx ring whose requests offer
/// our rx pages, and their event channel(s).
///
/// A tx id names a tx page; a writer reserves ids and ring slots together (waiting in FIFO order while the
/// ring or the pages are used up: back-pressure), fills the pages and publishes the requests; the response
/// frees the id. Each rx page is posted under its own id; the ring slot it was posted in is remembered, since
/// the backend answers in that slot (a descriptor overlays the id). The backend is untrusted: every response
/// goes through ``NetifRxAssembler`` or the tx checks, and anything wrong fails the queue.
///
/// OCaml: `Netif`'s `Front` ending (`tx_pool`, `rx_map`, `Lwt_ring.Front`)
final class NetFrontQueue: Sendable {
    private struct TxWaiter {
        var slots: Int
        var ids: Int
        var continuation: CheckedContinuation<Result<[UInt16], NetworkError>, Never>
    }

    private struct State {
        var txRing: FrontRing?
        var rxRing: FrontRing?
        var txPages: [ExportedPage]
        var txFree: [UInt16]
        var txInFlight: [Bool]
        var reservedSlots = 0
        var txWaiters: [TxWaiter] = []
        var rxPages: [ExportedPage]
        var rxFree: [UInt16]
        var rxPostedBySlot: [UInt16]
        var rxAssembler: NetifRxAssembler
        var rxHeld = false
        var failure: NetworkError?
    }

    let index: Int
    let txPort: EventChannelPort
    let rxPort: EventChannelPort
    private let events: any EventChannelBackend
    private let frames: FrameQueue
    private let counters: NetworkCounters
    private let completeBlankChecksums: Bool
    private let onViolation: @Sendable (String) -> Void
    private let state: Mutex<State>

    init(
        index: Int, txRing: FrontRing, rxRing: FrontRing, txPages: [ExportedPage], rxPages: [ExportedPage],
        txPort: EventChannelPort, rxPort: EventChannelPort, events: any EventChannelBackend,
        negotiated: NetifNegotiated, frames: FrameQueue, counters: NetworkCounters, completeBlankChecksums: Bool,
        onViolation: @escaping @Sendable (String) -> Void
    ) {
        self.index = index
        self.txPort = txPort
        self.rxPort = rxPort
        self.events = events
        self.frames = frames
        self.counters = counters
        self.completeBlankChecksums = completeBlankChecksums
        self.onViolation = onViolation
        self.state = Mutex(
            State(
                txRing: txRing, rxRing: rxRing, txPages: txPages, txFree: (0..<UInt16(txPages.count)).reversed(),
                txInFlight: [Bool](repeating: false, count: txPages.count), rxPages: rxPages,
                rxFree: (0..<UInt16(rxPages.count)).reversed(),
                rxPostedBySlot: [UInt16](repeating: 0, count: Int(rxRing.size)),
                rxAssembler: NetifRxAssembler(limits: .init(negotiated))))
    }

    /// The most tx pages and slots a frame can ever get here.
    var txCapacity: (pages: Int, slots: Int) {
        state.withLock { ($0.txPages.count, Int($0.txRing?.size ?? 0)) }
    }

    /// Ring entries in use: (tx requests outstanding, rx buffers posted).
    var ringUse: (tx: Int, rx: Int) {
        state.withLock { (Int($0.txRing?.outstanding ?? 0), Int($0.rxRing?.outstanding ?? 0)) }
    }

    // MARK: - Transmit

    /// Reserves `ids` tx pages and `slots` ring entries, waiting (FIFO) until both are free.
    func reserve(ids: Int, slots: Int) async throws(NetworkError) -> [UInt16] {
        // Fast path: free pages and slots now, no suspension.
        let immediate = state.withLock { state -> Result<[UInt16], NetworkError>? in
            if let failure = state.failure { return .failure(failure) }
            guard state.txWaiters.isEmpty else { return nil }
            return Self.take(&state, ids: ids, slots: slots).map { .success($0) }
        }
        if let immediate { return try immediate.get() }
        let result: Result<[UInt16], NetworkError> = await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Result<[UInt16], NetworkError>? in
                if let failure = state.failure { return .failure(failure) }
                if state.txWaiters.isEmpty, let taken = Self.take(&state, ids: ids, slots: slots) {
                    return .success(taken)
                }
                state.txWaiters.append(TxWaiter(slots: slots, ids: ids, continuation: continuation))
                return nil
            }
            if let ready {
                continuation.resume(returning: ready)
            } else {
                counters.count(\.txWaits)
            }
        }
        return try result.get()
    }

    private static func take(_ state: inout State, ids: Int, slots: Int) -> [UInt16]? {
        guard let ring = state.txRing, state.txFree.count >= ids,
            Int(ring.freeRequests) - state.reservedSlots >= slots
        else { return nil }
        state.reservedSlots += slots
        let taken = Array(state.txFree.suffix(ids))
        state.txFree.removeLast(ids)
        return taken
    }

    /// The tx page of `id` (valid until the id is submitted or given back).
    func txPage(_ id: UInt16) -> PageBuffer? {
        state.withLock { $0.txPages.indices.contains(Int(id)) ? $0.txPages[Int(id)].page : nil }
    }

    /// Gives back a reservation that will not be submitted.
    func cancel(ids: [UInt16], slots: Int) {
        let wake = state.withLock { state -> [(CheckedContinuation<Result<[UInt16], NetworkError>, Never>, [UInt16])] in
            state.txFree.append(contentsOf: ids)
            state.reservedSlots -= slots
            return Self.grantWaiters(&state)
        }
        for (continuation, ids) in wake { continuation.resume(returning: .success(ids)) }
    }

    /// Publishes a frame held in the pages of `ids` (in order; `size` bytes in all), with its descriptor,
    /// using `reserved` of the reserved slots. On failure nothing changed: the caller cancels its reservation.
    func submit(
        ids: [UInt16], size: Int, flags: NetifTxFlags, extra: NetifExtraInfo?, reserved: Int
    ) throws(NetworkError) {
        let notify = state.withLock { state -> Result<Bool, NetworkError> in
            if let failure = state.failure { return .failure(failure) }
            guard var ring = state.txRing else { return .failure(.disconnected) }
            state.reservedSlots -= reserved
            var remaining = size
            for (position, id) in ids.enumerated() {
                // Reserved, so the slots exist.
                guard let slot = ring.nextRequestSlot() else { break }
                let chunk = min(remaining, xenPageSize)
                remaining -= chunk
                var requestFlags: NetifTxFlags = position == 0 ? flags : []
                if position < ids.count - 1 { requestFlags.insert(.moreData) }
                if position == 0, extra != nil { requestFlags.insert(.extraInfo) }
                let announced = position == 0 ? size : chunk
                NetifTxRequest(
                    grant: state.txPages[Int(id)].ref, offset: 0, flags: requestFlags, id: id, size: UInt16(announced)
                ).encode(into: slot)
                state.txInFlight[Int(id)] = true
                if position == 0, let extra, let extraSlot = ring.nextRequestSlot() { extra.encode(into: extraSlot) }
            }
            let notify = ring.pushRequests()
            state.txRing = ring
            return .success(notify)
        }
        if try notify.get() { try? events.notify(txPort) }
    }

    /// Consumes tx responses: frees their pages and wakes writers.
    func drainTx() {
        var violation: String?
        let wake = state.withLock { state -> [(CheckedContinuation<Result<[UInt16], NetworkError>, Never>, [UInt16])] in
            guard state.failure == nil, var ring = state.txRing else { return [] }
            do {
                while true {
                    var available = try ring.unconsumedResponses()
                    while available > 0 {
                        available -= 1
                        let response = try NetifTxResponse.decode(from: ring.nextResponseSlot())
                        if response.status == .null { continue }
                        let id = Int(response.id)
                        guard id < state.txInFlight.count, state.txInFlight[id] else {
                            throw NetifProtocolError.unknownID(response.id)
                        }
                        state.txInFlight[id] = false
                        state.txFree.append(response.id)
                        switch response.status {
                        case .okay, .null: break
                        case .dropped, .error: counters.count(\.txErrors)
                        }
                    }
                    if try !ring.finalCheckForResponses() { break }
                }
            } catch {
                violation = "\(error)"
            }
            state.txRing = ring
            return Self.grantWaiters(&state)
        }
        for (continuation, ids) in wake { continuation.resume(returning: .success(ids)) }
        if let violation { onViolation(violation) }
    }

    private static func grantWaiters(
        _ state: inout State
    ) -> [(CheckedContinuation<Result<[UInt16], NetworkError>, Never>, [UInt16])] {
        var ready: [(CheckedContinuation<Result<[UInt16], NetworkError>, Never>, [UInt16])] = []
        while let first = state.txWaiters.first, let ids = take(&state, ids: first.ids, slots: first.slots) {
            ready.append((first.continuation, ids))
            state.txWaiters.removeFirst()
        }
        return ready
    }

    // MARK: - Receive

    /// Consumes rx responses into frames (unless the reader is behind), then posts every free page again.
    func drainRx() {
        var delivered: [NetworkFrame] = []
        var violation: String?
        var errors: UInt64 = 0
        let notify = state.withLock { state -> Bool in
            guard state.failure == nil, var ring = state.rxRing else { return false }
            defer { state.rxRing = ring }
            do {
                drain: while true {
                    var available = try ring.unconsumedResponses()
                    while available > 0 {
                        if !state.rxAssembler.hasPartialPacket, frames.isFull {
                            if !state.rxHeld { counters.count(\.rxHeldBack) }
                            state.rxHeld = true
                            break drain
                        }
                        available -= 1
                        let index = ring.responseConsumer
                        let posted = state.rxPostedBySlot[Int(index & (ring.size - 1))]
                        guard
                            let packet = try state.rxAssembler.consume(
                                ring.nextResponseSlot(), index: index, posted: posted)
                        else { continue }
                        if packet.error != nil {
                            errors += 1
                        } else if let frame = frame(from: packet, pages: state.rxPages) {
                            delivered.append(frame)
                        }
                        state.rxFree.append(contentsOf: packet.buffers)
                    }
                    state.rxHeld = false
                    if try !ring.finalCheckForResponses() { break }
                }
            } catch {
                violation = "\(error)"
                return false
            }
            // Post every free page again, remembering which slot holds which.
            while ring.freeRequests > 0, let buffer = state.rxFree.popLast() {
                let slotIndex = ring.requestProducer
                guard let slot = ring.nextRequestSlot() else { break }
                state.rxPostedBySlot[Int(slotIndex & (ring.size - 1))] = buffer
                NetifRxRequest(id: buffer, grant: state.rxPages[Int(buffer)].ref).encode(into: slot)
            }
            return ring.pushRequests()
        }
        if errors > 0 { counters.count(\.rxErrors, by: errors) }
        for frame in delivered {
            counters.received(frame.data.count)
            frames.offer(frame)
        }
        if notify { try? events.notify(rxPort) }
        if let violation { onViolation(violation) }
    }

    /// Copies a packet's pieces out of our pages into a frame of its own (the pages are posted again).
    private func frame(from packet: NetifRxPacket, pages: [ExportedPage]) -> NetworkFrame? {
        // Every byte is copied in below (the pieces cover the frame), so no zeroing first.
        // The backend's offsets and sizes were validated once, when the assembler read the responses.
        let data = PageBuffer.uninitialized(packet.size)
        let pieces = packet.pieces.map { pages[Int($0.buffer)].page.slice(from: $0.offset, count: $0.size) }
        PageBuffer.copy(from: pieces, to: [data])
        var checksum: NetworkChecksum =
            packet.flags.contains(.checksumBlank)
            ? .blank : packet.flags.contains(.dataValidated) ? .validated : .unverified
        if checksum == .blank, completeBlankChecksums, FrameChecksum.complete(data) { checksum = .validated }
        let gso = packet.gso.map { NetworkGSO(type: $0.type, segmentSize: Int($0.size)) }
        return NetworkFrame(data: data, checksum: checksum, gso: gso)
    }

    // MARK: - Life cycle

    /// Handles the events of `port` until it is unbound: tx responses, rx responses, or both.
    func run(port: EventChannelPort, tx: Bool, rx: Bool) async {
        if tx { drainTx() }
        if rx { drainRx() }
        for await _ in events.notifications(port) {
            if tx { drainTx() }
            if rx { drainRx() }
        }
    }

    /// Fails every waiting and later writer with `error`.
    func fail(_ error: NetworkError) {
        let waiters = state.withLock { state in
            if state.failure == nil { state.failure = error }
            defer { state.txWaiters.removeAll() }
            return state.txWaiters.map(\.continuation)
        }
        for waiter in waiters { waiter.resume(returning: .failure(error)) }
    }

    /// Drops the rings and every view of the exported pages (after the port tasks were joined), so the
    /// connection can revoke them.
    func close() {
        fail(.disconnected)
        state.withLock { state in
            state.txRing = nil
            state.rxRing = nil
            state.txPages = []
            state.rxPages = []
        }
    }
}
