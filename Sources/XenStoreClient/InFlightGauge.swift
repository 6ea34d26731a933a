import Synchronization

/// The number of requests in flight, mirrored out of `MultiplexerState` (updated under its lock) so that a
/// transport's I/O thread can read it without the lock: it spins only while requests go one at a time (see
/// `DescriptorStream.Pusher`).
final class InFlightGauge: Sendable {
    let count = Atomic<Int>(0)
    /// The last replies received answered a lone request (none other was in flight).
    let lone = Atomic<Bool>(true)

    /// One request at a time: the last reply was for a lone request and at most one is in flight now. With
    /// many in flight, replies come in bursts and are better gathered by a sleeping `poll`.
    var wantsSpin: Bool { count.load(ordering: .relaxed) <= 1 && lone.load(ordering: .relaxed) }

    /// Mirrors `state`'s count; called under the state lock after every change to `pending` that matters.
    func update(_ state: MultiplexerState) {
        count.store(state.pending.count, ordering: .relaxed)
    }
}
