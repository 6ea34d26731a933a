import Synchronization
public import XenCore

/// The free list of grant references a domain hands out before granting pages.
///
/// FIFO like mirage-xen's `Queue`, but `get(count:)` is all-or-nothing under one lock: a caller either takes
/// all `n` references at once or waits in FIFO order with its `n`, so concurrent multi-ref callers can never
/// hold partial sets and deadlock each other (mirage-xen's `get_n` is `n` sequential `get`s). Blocking waiters
/// are served strictly in arrival order; a large request at the head is not starved by small ones behind it.
///
/// OCaml: `Xen_os.Xen.Export` free list (`get`, `get_n`, `put`, ...); `Gnt.Gntshr` deprecated twins.
public final class GrantRefPool: Sendable {
    private typealias Continuation = UnsafeContinuation<WaitOutcome, Never>

    /// How a blocking `get` ends.
    private enum WaitOutcome: Sendable {
        case refs([GrantRef])
        case cancelled
        case timedOut
    }

    private struct Waiter {
        let id: UInt64
        let count: Int
        let continuation: Continuation
    }

    private struct State {
        /// Ring buffer of free refs (capacity = every ref of the pool).
        var ring: [UInt32]
        var head = 0
        var freeCount = 0
        /// `isFree[ref - lower]`: catches double puts and puts of foreign refs.
        var isFree: [Bool]
        let lower: UInt32
        var waiters: [Waiter] = []
        var nextWaiterID: UInt64 = 0

        mutating func pop() -> GrantRef {
            let value = ring[head]
            head = head + 1 == ring.count ? 0 : head + 1
            freeCount -= 1
            isFree[Int(value - lower)] = false
            return GrantRef(value)
        }

        mutating func popMany(_ n: Int) -> [GrantRef] {
            var refs: [GrantRef] = []
            refs.reserveCapacity(n)
            for _ in 0..<n { refs.append(pop()) }
            return refs
        }

        mutating func push(_ value: UInt32) {
            var tail = head + freeCount
            if tail >= ring.count { tail -= ring.count }
            ring[tail] = value
            freeCount += 1
        }

        /// Serves waiters from the head while enough refs are free.
        mutating func drain() -> [(Continuation, [GrantRef])] {
            var ready: [(Continuation, [GrantRef])] = []
            while let first = waiters.first, first.count <= freeCount {
                waiters.removeFirst()
                ready.append((first.continuation, popMany(first.count)))
            }
            return ready
        }
    }

    private let state: Mutex<State>
    private let lower: UInt32
    /// Every reference this pool manages (free or not).
    public let capacity: Int

    /// A pool of the references in `refs` (mirage-xen: `nr_reserved ..< nr_entries`, i.e. `8..<2048`).
    ///
    /// OCaml: the free-list initialisation in `Xen_os.Xen.Export` (`Gnttab.init`)
    public init(refs: Range<UInt32> = 8..<2048) {
        precondition(!refs.isEmpty, "a grant reference pool needs at least one reference")
        lower = refs.lowerBound
        capacity = refs.count
        state = Mutex(
            State(
                ring: Array(refs), freeCount: refs.count, isFree: Array(repeating: true, count: refs.count),
                lower: refs.lowerBound))
    }

    // MARK: - Non-blocking

    /// The number of references free right now.
    ///
    /// OCaml: `Xen_os.Xen.Export.num_free_grants`
    public var freeCount: Int { state.withLock { $0.freeCount } }

    /// The number of tasks waiting in ``get(timeout:)`` / ``get(count:timeout:)`` (for diagnostics and tests).
    ///
    /// OCaml: none (the `Lwt_dllist` of waiters is private there)
    public var waitingCount: Int { state.withLock { $0.waiters.count } }

    /// One free reference, or nil when the table is full.
    ///
    /// OCaml: `Xen_os.Xen.Export.get_nonblock`
    public func getNonblocking() -> GrantRef? {
        state.withLock { state in
            guard state.freeCount > 0 else { return nil }
            return state.pop()
        }
    }

    /// `count` free references, or `[]` when fewer are free (nothing is taken then).
    ///
    /// OCaml: `Xen_os.Xen.Export.get_n_nonblock`
    public func getNonblocking(count: Int) -> [GrantRef] {
        guard count > 0 else { return [] }
        return state.withLock { state in
            guard state.freeCount >= count else { return [] }
            return state.popMany(count)
        }
    }

    // MARK: - Blocking

    /// One reference, waiting (in FIFO order) while the table is full.
    ///
    /// Throws `CancellationError` if the task is cancelled while waiting, and
    /// ``GrantTableError/timedOut(_:after:)`` if no reference came free within `timeout` (nil, the default:
    /// wait as long as it takes, as OCaml does). Nothing is taken when it throws.
    /// OCaml: `Xen_os.Xen.Export.get`
    public func get(timeout: Duration? = nil) async throws -> GrantRef {
        try await get(count: 1, timeout: timeout)[0]
    }

    /// `count` references taken atomically, waiting (in FIFO order, with `count`) until that many are free.
    ///
    /// Throws ``GrantTableError/requestTooLarge(requested:capacity:)`` when `count` exceeds ``capacity``,
    /// ``GrantTableError/invalidCount(_:)`` when negative, `CancellationError` if the task is cancelled while
    /// waiting, and ``GrantTableError/timedOut(_:after:)`` (``GrantTableWait/freeRefs(count:)``) if they did
    /// not come free within `timeout` (nil, the default: no limit). Nothing is taken when it throws. (Untyped
    /// `throws` because a typed throw carries one type; every error is a `GrantTableError` or a
    /// `CancellationError`.)
    /// OCaml: `Xen_os.Xen.Export.get_n`
    public func get(count: Int, timeout: Duration? = nil) async throws -> [GrantRef] {
        guard count >= 0 else { throw GrantTableError.invalidCount(count) }
        guard count <= capacity else { throw GrantTableError.requestTooLarge(requested: count, capacity: capacity) }
        if count == 0 { return [] }
        // Fast path: nobody queued and enough free.
        let fast: [GrantRef]? = state.withLock { state in
            guard state.waiters.isEmpty, state.freeCount >= count else { return nil }
            return state.popMany(count)
        }
        if let fast { return fast }

        let id = state.withLock { state in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        // The timer ends the wait the way cancellation does; it is itself cancelled once the wait is over.
        let timer = timeout.map { limit in
            Task { [weak self] in
                try? await Task.sleep(for: limit)
                if !Task.isCancelled { self?.endWait(id: id, with: .timedOut) }
            }
        }
        defer { timer?.cancel() }
        let outcome = await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: Continuation) in
                enqueue(id: id, count: count, continuation: continuation)
            }
        } onCancel: {
            endWait(id: id, with: .cancelled)
        }
        switch outcome {
        case .refs(let refs): return refs
        case .cancelled: throw CancellationError()
        case .timedOut: throw GrantTableError.timedOut(.freeRefs(count: count), after: timeout ?? .zero)
        }
    }

    private func enqueue(id: UInt64, count: Int, continuation: Continuation) {
        let immediate: WaitOutcome? = state.withLock { state in
            // Checked under the lock: either we see the cancellation here, or onCancel finds the waiter.
            if Task.isCancelled { return .cancelled }
            if state.waiters.isEmpty, state.freeCount >= count {
                return .refs(state.popMany(count))
            }
            state.waiters.append(Waiter(id: id, count: count, continuation: continuation))
            return nil
        }
        if let immediate { continuation.resume(returning: immediate) }
    }

    /// Ends waiter `id` with `outcome` (cancelled or timed out) if it is still queued.
    private func endWait(id: UInt64, with outcome: WaitOutcome) {
        let (ended, ready): (Continuation?, [(Continuation, [GrantRef])]) = state.withLock { state in
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return (nil, []) }
            let waiter = state.waiters.remove(at: index)
            // A cancelled head may have been blocking smaller requests behind it.
            return (waiter.continuation, state.drain())
        }
        ended?.resume(returning: outcome)
        resumeAll(ready)
    }

    private func resumeAll(
        _ ready: [(Continuation, [GrantRef])]
    ) {
        for (continuation, refs) in ready { continuation.resume(returning: .refs(refs)) }
    }

    // MARK: - Returning references

    /// Returns a reference to the pool and wakes the first waiter that can now be served.
    ///
    /// Returns false (and changes nothing) for a reference this pool does not manage or that is already free,
    /// so a double `put` cannot hand the same reference to two owners.
    /// OCaml: `Xen_os.Xen.Export.put`
    @discardableResult
    public func put(_ ref: GrantRef) -> Bool {
        put([ref]) == 1
    }

    /// Returns several references at once (one wake-up pass); answers how many were accepted.
    ///
    /// OCaml: `List.iter Xen_os.Xen.Export.put`
    @discardableResult
    public func put(_ refs: [GrantRef]) -> Int {
        let (accepted, ready) = state.withLock { state in
            var accepted = 0
            for ref in refs {
                guard ref.rawValue >= lower else { continue }
                let index = Int(ref.rawValue - lower)
                guard index < capacity, !state.isFree[index] else { continue }
                state.isFree[index] = true
                state.push(ref.rawValue)
                accepted += 1
            }
            return (accepted, state.drain())
        }
        resumeAll(ready)
        return accepted
    }

    // MARK: - Scoped use

    /// Runs `body` with one reference and returns it to the pool afterwards, on every path: return, throw,
    /// and cancellation (a wait for the reference cancelled throws `CancellationError` with nothing taken).
    /// `timeout` bounds the wait for the reference as in ``get(timeout:)``.
    ///
    /// OCaml: `Xen_os.Xen.Export.with_ref`
    public func withRef<R>(
        timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation, _ body: (GrantRef) async throws -> R
    ) async throws -> R {
        let ref = try await get(timeout: timeout)
        defer { put(ref) }
        return try await body(ref)
    }

    /// Runs `body` with `count` references (taken all at once) and returns them afterwards, on every path:
    /// return, throw, and cancellation. `timeout` bounds the wait as in ``get(count:timeout:)``.
    ///
    /// OCaml: `Xen_os.Xen.Export.with_refs`
    public func withRefs<R>(
        _ count: Int, timeout: Duration? = nil, isolation: isolated (any Actor)? = #isolation,
        _ body: ([GrantRef]) async throws -> R
    ) async throws -> R {
        let refs = try await get(count: count, timeout: timeout)
        defer { put(refs) }
        return try await body(refs)
    }
}
