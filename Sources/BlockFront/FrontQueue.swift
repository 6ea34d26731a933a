import BlkifProtocol
import BlockDevice
import EventChannel
import GrantTable
import SharedRing
import Synchronization
import XenCore

/// One queue of a frontend: a shared ring, its event channel and the requests in flight on it.
///
/// Request ids are ring-slot tokens `0..<size`: one is taken before a request is produced and given back when
/// its response is consumed, so a free id always means a free ring entry. The backend is untrusted: a
/// response with an id not in flight, an index beyond what was requested, or an unknown status fails the
/// queue, every request in flight and every later one.
///
/// OCaml: `Blkfront`'s `Lwt_ring.Front` client (`Lwt_ring.Front.push_request_and_wait`)
final class FrontQueue: Sendable {
    private struct Pending {
        var continuation: CheckedContinuation<BlkifStatus, any Error>
        /// The operation bytes a response may echo: the request's, or for an indirect request its inner
        /// operation too (Linux blkback echoes that one).
        var operations: (UInt8, UInt8)
    }

    private struct State {
        /// The ring until the queue fails (disconnect or a protocol violation): then nothing touches it any
        /// more, and dropping it lets go of this queue's view of the ring pages.
        var ring: FrontRing?
        var freeIDs: [UInt64]
        var pending: [Pending?]
        var waiters: [CheckedContinuation<Void, Never>] = []
        var failure: BlockError? {
            didSet { if failure != nil { ring = nil } }
        }
    }

    let index: Int
    let port: EventChannelPort
    let ringRefs: [GrantRef]
    private let events: any EventChannelBackend
    private let state: Mutex<State>
    private let onViolation: @Sendable (String) -> Void

    init(
        index: Int, ring: FrontRing, ringRefs: [GrantRef], port: EventChannelPort, events: any EventChannelBackend,
        onViolation: @escaping @Sendable (String) -> Void
    ) {
        self.index = index
        self.port = port
        self.ringRefs = ringRefs
        self.events = events
        self.onViolation = onViolation
        let size = Int(ring.size)
        self.state = Mutex(
            State(
                ring: ring, freeIDs: (0..<UInt64(size)).reversed(),
                pending: [Pending?](repeating: nil, count: size)))
    }

    /// Submits one request (built by `make` from the id it is given) and waits for its status.
    func submit(_ make: @escaping @Sendable (UInt64) -> BlkifRequest) async throws(BlockError) -> BlkifStatus {
        let id = try await takeID()
        do {
            return try await withCheckedThrowingContinuation { continuation in
                let outcome = state.withLock { state -> Result<Bool, BlockError> in
                    if let failure = state.failure { return .failure(failure) }
                    let request = make(id)
                    guard let slot = state.ring!.nextRequestSlot() else {
                        return .failure(.io(context: "ring full with a free id"))
                    }
                    request.encode(into: slot)
                    state.pending[Int(id)] = Pending(continuation: continuation, operations: operationBytes(request))
                    return .success(state.ring!.pushRequests())
                }
                switch outcome {
                case .failure(let error):
                    giveBack(id)
                    continuation.resume(throwing: error)
                case .success(let notify):
                    if notify { try? events.notify(port) }
                }
            }
        } catch let error as BlockError {
            throw error
        } catch {
            throw .io(context: "\(error)", underlying: error)
        }
    }

    private func operationBytes(_ request: BlkifRequest) -> (UInt8, UInt8) {
        switch request {
        case .direct(let direct): (direct.operation.rawValue, direct.operation.rawValue)
        case .indirect(let indirect): (BlkifOperation.indirect.rawValue, indirect.operation.rawValue)
        case .discard: (BlkifOperation.discard.rawValue, BlkifOperation.discard.rawValue)
        }
    }

    private func takeID() async throws(BlockError) -> UInt64 {
        while true {
            let taken = state.withLock { state -> Result<UInt64?, BlockError> in
                if let failure = state.failure { return .failure(failure) }
                return .success(state.freeIDs.popLast())
            }
            if let id = try taken.get() { return id }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if state.failure != nil || !state.freeIDs.isEmpty { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    private func giveBack(_ id: UInt64) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.freeIDs.append(id)
            return state.waiters.isEmpty ? nil : state.waiters.removeFirst()
        }
        waiter?.resume()
    }

    /// Consumes every response on the ring and completes the matching requests. Runs after each event.
    func drain() {
        var completed: [(CheckedContinuation<BlkifStatus, any Error>, BlkifStatus)] = []
        var wake: [CheckedContinuation<Void, Never>] = []
        var violation: String?
        var failed: [CheckedContinuation<BlkifStatus, any Error>] = []
        state.withLock { state in
            guard state.failure == nil else { return }
            var decoded: [Result<BlkifResponse, BlkifDecodeError>] = []
            do {
                _ = try state.ring!.consumeResponses { slot in
                    decoded.append(Result { () throws(BlkifDecodeError) in try BlkifResponse.decode(from: slot) })
                }
            } catch {
                violation = "\(error)"
            }
            for result in decoded where violation == nil {
                switch result {
                case .failure(let error): violation = "\(error)"
                case .success(let response):
                    guard response.id < UInt64(state.pending.count), let pending = state.pending[Int(response.id)]
                    else {
                        violation = "response for unknown id \(response.id)"
                        break
                    }
                    guard response.operation == pending.operations.0 || response.operation == pending.operations.1
                    else {
                        violation = "response \(response.id) echoes operation \(response.operation)"
                        break
                    }
                    state.pending[Int(response.id)] = nil
                    state.freeIDs.append(response.id)
                    completed.append((pending.continuation, response.status))
                }
            }
            if let violation {
                state.failure = .io(context: "backend broke the blkif protocol: \(violation)")
                failed = state.pending.compactMap { $0?.continuation }
                state.pending = state.pending.map { _ in nil }
                wake = state.waiters
                state.waiters.removeAll()
            } else {
                let n = min(state.waiters.count, state.freeIDs.count)
                wake = Array(state.waiters.prefix(n))
                state.waiters.removeFirst(n)
            }
        }
        for (continuation, status) in completed { continuation.resume(returning: status) }
        if let violation {
            for continuation in failed {
                continuation.resume(throwing: BlockError.io(context: "backend broke the blkif protocol: \(violation)"))
            }
            onViolation(violation)
        }
        for waiter in wake { waiter.resume() }
    }

    /// Fails every request in flight and every later one with `error` (disconnect or a protocol failure
    /// elsewhere). Returns true if requests were in flight (their pages must not be reused).
    @discardableResult
    func fail(_ error: BlockError) -> Bool {
        let (pending, waiters) = state.withLock { state in
            if state.failure == nil { state.failure = error }
            let pending = state.pending.compactMap { $0?.continuation }
            state.pending = state.pending.map { _ in nil }
            defer { state.waiters.removeAll() }
            return (pending, state.waiters)
        }
        for continuation in pending { continuation.resume(throwing: error) }
        for waiter in waiters { waiter.resume() }
        return !pending.isEmpty
    }

    /// Waits for events and drains the ring until the port is unbound.
    func run() async {
        drain()
        for await _ in events.notifications(port) { drain() }
    }
}
