import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// SwiftXen's reactor: one thread polling every registered descriptor and calling its handler, on that thread,
/// when the descriptor is ready (level-triggered `poll(2)` in XenCore's ``PollLoop``, with a ``WakeSignal`` for
/// changes). The I/O that waits on a descriptor without a latency budget of its own shares ``shared()``: the
/// event-channel devices (every XenEventChannel's `/dev/xen/evtchn`), NBDServer's listeners and NetBack's TAP
/// readers, each of which had a poll thread of its own.
///
/// Handlers run on the reactor's thread and must not block: they do the non-blocking read the readiness
/// promised (an `accept`, a `read` of what is there) and hand work on. A handler returns whether to keep
/// polling its descriptor; `false` pauses the registration until ``setEvents(_:for:)``.
/// ``deregister(_:)`` is synchronous: once it returns (from any thread but the reactor's own) the handler is
/// not running and never runs again and the reactor's `poll` has let go of the descriptor, so the owner may
/// close it and free what the handler uses — the ownership rule "join tasks before you release what they
/// touch" in reactor form. It waits, yielding the core, for the woken reactor to finish a handler in progress
/// and start its next round (handlers are short); there is no other spin in the reactor.
package final class IOReactor: Sendable {
    /// What one registration asked for.
    private struct Entry {
        let descriptor: Int32
        var events: Int16
        let handler: @Sendable (Int16) -> Bool
    }

    private struct State {
        var entries: [UInt64: Entry] = [:]
        var nextID: UInt64 = 1
        /// Bumped on every change of `entries`, so the loop rebuilds its poll set.
        var generation: UInt64 = 0
        /// The registration whose handler is running on the reactor's thread.
        var dispatching: UInt64?
        /// The generation of the poll set the loop polls now: a descriptor removed at a later generation may
        /// still be in the kernel's hands (a `poll` in progress holds a reference to its file).
        var polledGeneration: UInt64 = 0
        var thread: pthread_t?
        /// Whether the loop's thread runs (it ends when nothing is registered, and starts with the next
        /// registration: an idle process keeps no thread, and a process whose main thread exits is not held).
        var running = false
        var stopping = false
    }

    private let state = Mutex(State())
    private let wake: WakeSignal

    private static let sharedReactor = Mutex<IOReactor?>(nil)

    /// The process's reactor, started on first use.
    package static func shared() throws(IOReactorError) -> IOReactor {
        try sharedReactor.withLock { (reactor: inout IOReactor?) throws(IOReactorError) -> IOReactor in
            if let reactor { return reactor }
            let started = try IOReactor()
            reactor = started
            return started
        }
    }

    /// A reactor of its own (``shared()`` is the one to use; tests make their own and ``stop()`` it). Its thread
    /// starts with the first registration.
    package init() throws(IOReactorError) {
        do { wake = try WakeSignal() } catch { throw .wakeSignal(errno: error.errno) }
    }

    /// Polls `descriptor` for `events` (`POLLIN`, `POLLOUT`) and calls `handler` on the reactor's thread with
    /// the returned events (which may include `POLLERR`, `POLLHUP`, `POLLNVAL`) each time it is ready.
    /// Throws when the reactor's thread had to start and could not.
    package func register(
        _ descriptor: Int32, events: Int16, handler: @escaping @Sendable (_ revents: Int16) -> Bool
    ) throws(IOReactorError) -> IOReactorRegistration {
        let (id, start) = state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            state.entries[id] = Entry(descriptor: descriptor, events: events, handler: handler)
            state.generation &+= 1
            defer { state.running = true }
            return (id, !state.running)
        }
        if start {
            let status = DetachedThread.spawn { [self] in run() }
            guard status == 0 else {
                state.withLock { state in
                    state.entries[id] = nil
                    state.running = false
                }
                throw .thread(errno: status)
            }
        } else {
            wake.signal()
        }
        return IOReactorRegistration(id: id)
    }

    /// Changes what `registration` polls for (0 pauses it).
    package func setEvents(_ events: Int16, for registration: IOReactorRegistration) {
        let changed = state.withLock { state in
            guard state.entries[registration.id] != nil else { return false }
            state.entries[registration.id]!.events = events
            state.generation &+= 1
            return true
        }
        if changed { wake.signal() }
    }

    /// Removes `registration`. On return (unless called from that handler) the handler is not running and
    /// never runs again, and the reactor's `poll` no longer holds the descriptor: closing it then releases the
    /// file at once (a TAP interface disappears, a device's last reference goes).
    package func deregister(_ registration: IOReactorRegistration) {
        let (mustWait, generation) = state.withLock { state in
            state.entries[registration.id] = nil
            state.generation &+= 1
            let onReactor = state.thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false
            return (!onReactor && state.running, state.generation)
        }
        wake.signal()
        guard mustWait else { return }
        // The loop, woken, finishes the handler in progress (handlers are short) and starts a round without
        // the descriptor.
        var rounds = 0
        while state.withLock({ state in
            state.dispatching == registration.id
                || (state.running && state.polledGeneration < generation && !state.stopping)
        }) {
            rounds += 1
            if rounds < 100 { sched_yield() } else { usleep(50) }
        }
    }

    /// Ends the reactor's thread after its current round; registrations are dropped.
    package func stop() {
        state.withLock { $0.stopping = true }
        wake.signal()
    }

    /// How many registrations are active (for tests and diagnostics).
    package var registrationCount: Int { state.withLock { $0.entries.count } }

    private func run() {
        state.withLock { $0.thread = pthread_self() }
        PollLoop.run(ReactorLoop(self), wake: wake)
    }

    /// The loop's side of the reactor: the poll set follows the registrations (rebuilt when their generation
    /// changes), and every ready descriptor's handler is called.
    private final class ReactorLoop: PollLoopClient {
        let reactor: IOReactor
        var ids: [UInt64] = [0]
        var seen = UInt64.max

        init(_ reactor: IOReactor) { self.reactor = reactor }

        func prepare(_ fds: inout [pollfd], jobsWaiting: Bool) -> PollLoopStep {
            let (stop, snapshot) = reactor.state.withLock {
                state -> (Bool, (UInt64, [(UInt64, Int32, Int16)])?) in
                if state.stopping || state.entries.isEmpty {
                    // Nothing to poll: the thread ends (the next registration starts another).
                    state.entries.removeAll()
                    state.running = false
                    state.thread = nil
                    return (true, nil)
                }
                guard state.generation != seen else { return (false, nil) }
                state.polledGeneration = state.generation
                let active = state.entries.filter { $0.value.events != 0 }
                return (false, (state.generation, active.map { ($0.key, $0.value.descriptor, $0.value.events) }))
            }
            if stop { return .stop }
            if let (generation, active) = snapshot {
                seen = generation
                fds.removeSubrange(1...)
                fds += active.map { pollfd(fd: $0.1, events: $0.2, revents: 0) }
                ids = [0] + active.map(\.0)
            }
            return .wait()
        }

        func ready(_ fds: [pollfd]) -> Bool {
            for index in fds.indices.dropFirst() where fds[index].revents != 0 {
                reactor.dispatch(ids[index], fds[index].revents)
            }
            return true
        }

        func failed(errno: Int32) -> Bool {
            usleep(1000)  // ENOMEM: try again shortly rather than spin
            return true
        }
    }

    /// Calls the handler of `id` if it is still registered and polling; pauses it when the handler says so or
    /// its descriptor is not open (`POLLNVAL`: its owner closed it without deregistering).
    private func dispatch(_ id: UInt64, _ revents: Int16) {
        let handler = state.withLock { state -> (@Sendable (Int16) -> Bool)? in
            guard let entry = state.entries[id], entry.events != 0 else { return nil }
            state.dispatching = id
            return entry.handler
        }
        guard let handler else { return }
        let keep = handler(revents) && revents & Int16(POLLNVAL) == 0
        state.withLock { state in
            state.dispatching = nil
            if !keep, state.entries[id] != nil {
                state.entries[id]!.events = 0
                state.generation &+= 1
            }
        }
    }
}

/// One descriptor registered with an ``IOReactor``.
package struct IOReactorRegistration: Sendable, Hashable {
    fileprivate let id: UInt64
}

/// The reactor could not start.
package enum IOReactorError: Error, Equatable {
    /// `pipe(2)` failed for its wake-up signal.
    case wakeSignal(errno: Int32)
    /// `pthread_create` failed.
    case thread(errno: Int32)

    /// The error number.
    package var errno: Int32 {
        switch self {
        case .wakeSignal(let errno), .thread(let errno): errno
        }
    }
}
