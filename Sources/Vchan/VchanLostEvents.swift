/// What the re-check timer does about lost events, as a pure state machine (the connection feeds it the
/// indices and acts on its answers).
///
/// Events can be lost below both ends: on Xen 4.17 under QEMU TCG, two `vchan-socket-proxy` processes
/// (libxenvchan on both ends, no SwiftXen) stall the same way our pairs do, a reader asleep in front of a full
/// ring whose writer consumed the request and sent the event. libxenvchan then hangs for ever. We do not:
/// - **incoming**: the timer's kick makes a sleeping reader or writer look again, so a lost event costs at
///   most one interval; the timer counts the reader or writer it found asleep over bytes or room that had
///   already come (``rescued``: lost events, and under load events still on their way);
/// - **outgoing**: after we signal the peer, if the index it should move has not moved for a whole interval,
///   the event is sent again (``resent``), and again while the peer still does not move, each repeat twice as
///   far from the last as the one before, up to ``maximumSpacing`` intervals apart: a repeat can be lost too
///   (a single repeat left a peer asleep for ever when both went). A duplicate is harmless (libxenvchan's
///   wait consumes it and looks at the ring); a peer with nothing to do gets a handful of duplicates per event
///   we sent it, then one every ``maximumSpacing`` intervals.
///
/// OCaml: none (ocaml-vchan relies on every event arriving)
struct VchanLostEvents: Sendable {
    /// An event we sent, and the peer's index when we sent it.
    struct Signal: Sendable {
        var peerIndex: UInt32
        /// When it was sent, or last repeated.
        var at: ContinuousClock.Instant
        /// Repeats so far; the next is due `2^repeats` intervals (at most ``maximumSpacing``) after `at`.
        var repeats = 0
    }

    /// The widest spacing of repeats, in intervals.
    static let maximumSpacing = 32

    /// After a read: the peer may write (its producer on our receive ring should move).
    private(set) var afterRead: Signal?
    /// After a write: the peer may read (its consumer on our send ring should move).
    private(set) var afterWrite: Signal?
    /// Events sent a second time.
    private(set) var resent: UInt64 = 0
    /// Ticks that found our reader asleep over bytes already in the ring, or our writer asleep over room
    /// already made: an incoming event lost (or still on its way), made up for by the timer's kick.
    private(set) var rescued: UInt64 = 0

    /// We signalled the peer after reading (`afterRead`) or writing, when its index was `peerIndex`.
    mutating func signalled(afterRead read: Bool, peerIndex: UInt32, at now: ContinuousClock.Instant) {
        let signal = Signal(peerIndex: peerIndex, at: now)
        if read { afterRead = signal } else { afterWrite = signal }
    }

    /// One tick of the timer, given the peer's producer on our receive ring and its consumer on our send
    /// ring (nil once a ring is released), and whether our reader (writer) sleeps although bytes (room) are
    /// there. Answers whether to send the peer an event again.
    mutating func tick(
        receiveProducer: UInt32?, sendConsumer: UInt32?, readerStuck: Bool, writerStuck: Bool,
        now: ContinuousClock.Instant, interval: Duration
    ) -> Bool {
        if readerStuck { rescued &+= 1 }
        if writerStuck { rescued &+= 1 }
        let repeatRead = Self.due(&afterRead, index: receiveProducer, now: now, interval: interval)
        let repeatWrite = Self.due(&afterWrite, index: sendConsumer, now: now, interval: interval)
        guard repeatRead || repeatWrite else { return false }
        resent &+= 1
        return true
    }

    /// Whether `signal` is due again: the peer has not moved its index since, for one interval after the
    /// event, two after the first repeat, four after the second, and so on up to ``maximumSpacing``. A signal
    /// the peer answered (its index moved) is forgotten.
    private static func due(
        _ signal: inout Signal?, index: UInt32?, now: ContinuousClock.Instant, interval: Duration
    ) -> Bool {
        guard let pending = signal, let index else { return false }
        guard index == pending.peerIndex else {
            signal = nil
            return false
        }
        let spacing = min(1 << min(pending.repeats, 30), maximumSpacing)
        guard now - pending.at >= interval * spacing else { return false }
        signal?.repeats += 1
        signal?.at = now
        return true
    }
}
