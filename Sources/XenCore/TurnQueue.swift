/// Tickets served in arrival order, for async users of one lock-protected resource that must take whole
/// turns (concurrent writers of one ring, so each one's bytes stay contiguous). Pure: the owner keeps it
/// under its lock and wakes its waiters after ``finish(_:)``.
///
/// OCaml: none (Lwt code serialises writers with an `Lwt_mutex`)
public struct TurnQueue: Sendable {
    private var next: UInt64 = 0
    private var serving: UInt64 = 0
    private var abandoned: Set<UInt64> = []

    /// An empty queue.
    public init() {}

    /// Takes the next ticket.
    public mutating func take() -> UInt64 {
        defer { next &+= 1 }
        return next
    }

    /// Whether `ticket` holds the turn.
    public func isServing(_ ticket: UInt64) -> Bool { serving == ticket }

    /// Ends `ticket`'s turn, or gives up a ticket whose turn has not come (it is skipped when it does).
    /// Answers whether some later ticket is still waiting (so its holder needs waking).
    @discardableResult
    public mutating func finish(_ ticket: UInt64) -> Bool {
        guard serving == ticket else {
            abandoned.insert(ticket)
            return false
        }
        serving &+= 1
        while abandoned.remove(serving) != nil { serving &+= 1 }
        return serving != next
    }
}
