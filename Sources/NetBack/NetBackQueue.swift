import CoreMetrics
import EventChannel
import GrantTable
import NetifProtocol
import NetworkDevice
import SharedRing
import Synchronization
import XenCore

/// One queue of a backend connection: the frontend's tx ring (its frames to us) and rx ring (its empty
/// pages, which we fill with frames for it), over rings mapped from the frontend.
///
/// Tx: requests are taken one slot at a time by ``NetifTxAssembler``, each complete frame is copied out of the
/// frontend's pages (grant copy) into a buffer of its own, and every slot is answered in order. While the
/// reader is behind, the remaining requests stay on the ring (the frontend then waits). Rx: requests are
/// banked as they arrive; a frame takes as many as it has pages (plus one for a GSO descriptor, which lands in
/// the slot of the request it overlays), is copied into their pages, and answered in the same slots, as
/// netif.h demands. Anything malformed from the frontend breaks the queue.
///
/// OCaml: `Netif`'s `Back` ending (`backend_get_n_grefs`, `Unified_RX_Ops`, `Unified_TX_Ops` backend halves)
final class NetBackQueue: Sendable {
    private struct State {
        var txRing: BackRing?
        var rxRing: BackRing?
        var txAssembler: NetifTxAssembler
        var bank: [NetifRxRequest] = []
        var bankHead = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var txHeld = false
        var failure: NetworkError?

        var banked: Int { bank.count - bankHead }
    }

    let txPort: EventChannelPort
    let rxPort: EventChannelPort
    let negotiated: NetifNegotiated
    private let events: any EventChannelBackend
    private let copier: FrontendCopier
    private let frames: FrameQueue
    private let counters: NetworkCounters
    private let metrics: NetBackMetrics
    private let ringGauges: (tx: Meter, rx: Meter)
    private let multicast: MulticastFilter
    private let completeBlankChecksums: Bool
    private let onBroken: @Sendable (String) -> Void
    private let state: Mutex<State>

    init(
        txRing: BackRing, rxRing: BackRing, txPort: EventChannelPort, rxPort: EventChannelPort,
        negotiated: NetifNegotiated, limits: NetifTxAssembler.Limits, events: any EventChannelBackend,
        copier: FrontendCopier, frames: FrameQueue, counters: NetworkCounters, metrics: NetBackMetrics,
        ringGauges: (tx: Meter, rx: Meter), multicast: MulticastFilter, completeBlankChecksums: Bool,
        onBroken: @escaping @Sendable (String) -> Void
    ) {
        self.txPort = txPort
        self.rxPort = rxPort
        self.negotiated = negotiated
        self.events = events
        self.copier = copier
        self.frames = frames
        self.counters = counters
        self.metrics = metrics
        self.ringGauges = ringGauges
        self.multicast = multicast
        self.completeBlankChecksums = completeBlankChecksums
        self.onBroken = onBroken
        self.state = Mutex(State(txRing: txRing, rxRing: rxRing, txAssembler: NetifTxAssembler(limits: limits)))
    }

    /// Ring entries in use: (rx requests banked, tx requests awaiting their frame's end).
    var ringUse: (banked: Int, pending: Int) {
        state.withLock { ($0.banked, Int($0.txRing?.pendingResponses ?? 0)) }
    }

    // MARK: - Frames from the frontend

    /// Takes every complete frame off the tx ring (unless the reader is behind) and answers its slots.
    func drainTx() {
        var delivered: [NetworkFrame] = []
        var broken: String?
        var heldBack = false
        var pending: UInt32 = 0
        let notify = state.withLock { state -> Bool in
            guard state.failure == nil, var ring = state.txRing else { return false }
            defer {
                state.txRing = ring
                pending = ring.pendingResponses
            }
            do {
                drain: while true {
                    var available = try ring.unconsumedRequests()
                    while available > 0 {
                        if !state.txAssembler.hasPartialPacket, frames.isFull {
                            if !state.txHeld { heldBack = true }
                            state.txHeld = true
                            break drain
                        }
                        available -= 1
                        guard let packet = try state.txAssembler.consume(ring.nextRequestSlot()) else { continue }
                        let (status, frame) = receive(packet)
                        if let frame { delivered.append(frame) }
                        for id in packet.responseIDs {
                            guard let slot = ring.nextResponseSlot() else { break }
                            NetifTxResponse(id: id ?? 0, status: id == nil ? .null : status).encode(into: slot)
                        }
                    }
                    state.txHeld = false
                    if try !ring.finalCheckForRequests() { break }
                }
            } catch {
                broken = "\(error)"
            }
            return ring.pushResponses()
        }
        if heldBack {
            counters.count(\.rxHeldBack)
            metrics.rx.backPressure.increment()
        }
        for frame in delivered {
            counters.received(frame.data.count)
            metrics.rx.frame(frame.data.count)
            frames.offer(frame)
        }
        ringGauges.rx.set(pending)
        if notify { try? events.notify(txPort) }
        if let broken { onBroken(broken) }
    }

    /// The status to answer and the frame to deliver for one packet from the frontend.
    private func receive(_ packet: NetifTxPacket) -> (NetifStatus, NetworkFrame?) {
        if packet.isMulticastControl {
            for extra in packet.extras {
                switch extra.kind {
                case .multicastAdd(let address): multicast.add(address)
                case .multicastDelete(let address): multicast.remove(address)
                default: break
                }
            }
            return (.okay, nil)
        }
        guard packet.size >= Netif.ethernetHeaderSize else {
            countReceiveError()
            return (.error, nil)
        }
        // Every byte is copied in below (the fragments cover the frame), so no zeroing first.
        let data = PageBuffer.uninitialized(packet.size)
        var offset = 0
        var segments: [GrantCopySegment] = []
        segments.reserveCapacity(packet.fragments.count)
        for fragment in packet.fragments where fragment.size > 0 {
            segments.append(
                GrantCopySegment(
                    from: .foreign(domain: copier.frontend, ref: fragment.grant, offset: fragment.offset),
                    to: .local(data.slice(from: offset, count: fragment.size)), length: fragment.size))
            offset += fragment.size
        }
        do { try copier.copy(segments) } catch {
            countReceiveError()
            return (.error, nil)
        }
        var checksum: NetworkChecksum =
            packet.flags.contains(.checksumBlank)
            ? .blank : packet.flags.contains(.dataValidated) ? .validated : .unverified
        if checksum == .blank, completeBlankChecksums, FrameChecksum.complete(data) { checksum = .validated }
        let gso = packet.gso.map { NetworkGSO(type: $0.type, segmentSize: Int($0.size)) }
        return (.okay, NetworkFrame(data: data, checksum: checksum, gso: gso))
    }

    private func countReceiveError() {
        counters.count(\.rxErrors)
        metrics.rx.errors.increment()
    }

    // MARK: - Frames to the frontend

    /// Banks the rx requests the frontend posted and wakes writers waiting for them.
    func bankRequests() {
        var broken: String?
        var banked = 0
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.failure == nil else { return [] }
            do { try Self.bank(&state) } catch { broken = "\(error)" }
            banked = state.banked
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        ringGauges.tx.set(banked)
        for waiter in waiters { waiter.resume() }
        if let broken { onBroken(broken) }
    }

    private static func bank(_ state: inout State) throws(SharedRingError) {
        guard var ring = state.rxRing else { return }
        defer { state.rxRing = ring }
        while true {
            var available = try ring.unconsumedRequests()
            while available > 0 {
                available -= 1
                state.bank.append(NetifRxRequest.decode(from: ring.nextRequestSlot()))
            }
            if try !ring.finalCheckForRequests() { break }
        }
    }

    /// Copies `frame` into the frontend's posted pages and answers their slots, waiting for enough of them.
    func transmit(_ frame: PageBuffer, flags: NetifRxFlags, extra: NetifExtraInfo?, poll: Duration?)
        async throws(NetworkError)
    {
        let pages = Netif.slots(forFrameOf: frame.count)
        let slots = pages + (extra == nil ? 0 : 1)
        while true {
            var broken: String?
            var banked = 0
            let outcome = state.withLock { state -> Result<(Bool, Bool), NetworkError>? in
                if let failure = state.failure { return .failure(failure) }
                do { try Self.bank(&state) } catch {
                    broken = "\(error)"
                    return .failure(.protocolViolation("\(error)"))
                }
                guard state.banked >= slots, var ring = state.rxRing else { return nil }
                defer { state.rxRing = ring }
                let requests = Array(state.bank[state.bankHead..<(state.bankHead + slots)])
                state.bankHead += slots
                banked = state.banked
                if state.bankHead > 256, state.bankHead * 2 > state.bank.count {
                    state.bank.removeFirst(state.bankHead)
                    state.bankHead = 0
                }
                // The descriptor takes the second request's slot; the data goes to the others' pages.
                let data = extra == nil ? requests : [requests[0]] + requests.dropFirst(2)
                var segments: [GrantCopySegment] = []
                for (index, request) in data.enumerated() {
                    let start = index * xenPageSize
                    let length = min(xenPageSize, frame.count - start)
                    segments.append(
                        GrantCopySegment(
                            from: .local(frame.slice(from: start, count: length)),
                            to: .foreign(domain: copier.frontend, ref: request.grant, offset: 0), length: length))
                }
                let copied = (try? copier.copy(segments)) != nil
                for (index, request) in data.enumerated() {
                    let start = index * xenPageSize
                    let length = min(xenPageSize, frame.count - start)
                    var responseFlags: NetifRxFlags = index == 0 ? flags : []
                    if index < data.count - 1 { responseFlags.insert(.moreData) }
                    if index == 0, extra != nil { responseFlags.insert(.extraInfo) }
                    guard let slot = ring.nextResponseSlot() else { break }
                    NetifRxResponse(
                        id: request.id, offset: 0, flags: responseFlags,
                        status: copied ? Int16(length) : NetifStatus.error.rawValue
                    ).encode(into: slot)
                    if index == 0, let extra, let extraSlot = ring.nextResponseSlot() { extra.encode(into: extraSlot) }
                }
                return .success((ring.pushResponses(), copied))
            }
            if let broken { onBroken(broken) }
            if let outcome {
                let (notify, copied) = try outcome.get()
                ringGauges.tx.set(banked)
                if notify { try? events.notify(rxPort) }
                if !copied {
                    counters.count(\.txErrors)
                    metrics.tx.errors.increment()
                }
                return
            }
            counters.count(\.txWaits)
            metrics.tx.backPressure.increment()
            await waitForRequests(slots, poll: poll)
            if Task.isCancelled { throw .cancelled }
        }
    }

    /// Waits until `slots` rx requests may be banked: woken by the frontend's notification, or every `poll`
    /// when it does not notify. The ring is looked at again under the same lock that registers the waiter, so
    /// a notification handled in between is not lost.
    private func waitForRequests(_ slots: Int, poll: Duration?) async {
        if let poll {
            try? await Task.sleep(for: poll)
            return
        }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state -> Bool in
                if state.failure != nil { return true }
                // A bad index is reported by the writer's next attempt, which banks again.
                if (try? Self.bank(&state)) == nil || state.banked >= slots { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    // MARK: - Life cycle

    /// Handles the events of `port` until it is unbound.
    func run(port: EventChannelPort, tx: Bool, rx: Bool) async {
        if tx { drainTx() }
        if rx { bankRequests() }
        for await _ in events.notifications(port) {
            if tx { drainTx() }
            if rx { bankRequests() }
        }
    }

    /// Fails waiting and later writers.
    func fail(_ error: NetworkError) {
        let waiters = state.withLock { state in
            if state.failure == nil { state.failure = error }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Drops the ring views (after the port tasks were joined), so the connection can unmap them.
    func close() {
        fail(.disconnected)
        state.withLock { state in
            state.txRing = nil
            state.rxRing = nil
        }
        ringGauges.tx.set(0)
        ringGauges.rx.set(0)
    }
}

/// The multicast addresses a frontend asked for (`XEN_NETIF_EXTRA_TYPE_MCAST_ADD`/`DEL`), kept across
/// connections of one vif as Linux keeps them per vif.
///
/// OCaml: none (Linux `xenvif_mcast_add` / `xenvif_mcast_match`)
final class MulticastFilter: Sendable {
    private let addresses = Mutex<Set<MACAddress>>([])
    /// Linux's limit (`XEN_NETBK_MCAST_MAX`).
    static let limit = 64

    func add(_ address: MACAddress) {
        addresses.withLock { set in
            if set.count < Self.limit { set.insert(address) }
        }
    }
    func remove(_ address: MACAddress) { _ = addresses.withLock { $0.remove(address) } }
    func contains(_ address: MACAddress) -> Bool { addresses.withLock { $0.contains(address) } }
    func clear() { addresses.withLock { $0.removeAll() } }
}
