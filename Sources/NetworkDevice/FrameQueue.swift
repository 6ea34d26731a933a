import Synchronization

/// The frames a device received and its reader has not taken yet: one queue per device, fed by every ring
/// of the device, read through ``NetworkFrames``.
///
/// The capacity is soft: a producer asks ``isFull`` before it takes the next frame off its ring, and holds
/// the rest there while the queue is full (the peer then waits). ``offer(_:)`` always succeeds, so a frame
/// already taken off a ring is never lost; the space handler runs when a reader makes room again.
/// OCaml: none (mirage-net-xen calls the listen callback inline; a slow callback stalls the ring)
public final class FrameQueue: Sendable {
    private struct State {
        var frames: [NetworkFrame] = []
        var head = 0
        var waiters: [(id: UInt64, continuation: UnsafeContinuation<NetworkFrame?, Never>)] = []
        var nextWaiter: UInt64 = 0
        var finished = false
        var wasFull = false
        var onSpace: (@Sendable () -> Void)?

        var count: Int { frames.count - head }

        mutating func take() -> NetworkFrame? {
            guard head < frames.count else { return nil }
            let frame = frames[head]
            head += 1
            if head > 64, head * 2 > frames.count {
                frames.removeFirst(head)
                head = 0
            }
            return frame
        }
    }

    /// Frames held before producers hold back.
    public let capacity: Int
    private let state = Mutex(State())

    /// An empty queue of `capacity` frames.
    public init(capacity: Int) { self.capacity = max(1, capacity) }

    /// Sets what runs (outside any lock) when a reader makes room after producers found the queue full.
    public func setSpaceHandler(_ handler: @escaping @Sendable () -> Void) {
        state.withLock { $0.onSpace = handler }
    }

    /// True when producers should hold back; records that one did, so the space handler runs later.
    public var isFull: Bool {
        state.withLock { state in
            let full = state.count >= capacity && !state.finished
            if full { state.wasFull = true }
            return full
        }
    }

    /// Frames waiting.
    public var count: Int { state.withLock { $0.count } }

    /// Adds a frame (to a waiting reader directly). Ignored once finished.
    public func offer(_ frame: NetworkFrame) {
        let waiter = state.withLock { state -> UnsafeContinuation<NetworkFrame?, Never>? in
            guard !state.finished else { return nil }
            if !state.waiters.isEmpty { return state.waiters.removeFirst().continuation }
            state.frames.append(frame)
            return nil
        }
        waiter?.resume(returning: frame)
    }

    /// Ends the sequence: readers get the frames still queued, then nil.
    public func finish() {
        let waiters = state.withLock { state in
            state.finished = true
            defer { state.waiters.removeAll() }
            return state.waiters.map(\.continuation)
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    /// The next frame; nil when finished and drained, or when the calling task is cancelled.
    public func next() async -> NetworkFrame? {
        // Fast path: a frame is waiting, no suspension.
        let (queued, id) = state.withLock { state -> (NetworkFrame?, UInt64) in
            if let frame = state.take() { return (frame, 0) }
            state.nextWaiter += 1
            return (nil, state.nextWaiter)
        }
        let frame: NetworkFrame?
        if let queued {
            frame = queued
        } else {
            frame = await wait(id)
        }
        // Taking a frame may have made the room producers were waiting for.
        let handler = state.withLock { state -> (@Sendable () -> Void)? in
            guard state.wasFull, state.count <= capacity / 2 else { return nil }
            state.wasFull = false
            return state.onSpace
        }
        handler?()
        return frame
    }

    /// Waits for the next frame as waiter `id`.
    private func wait(_ id: UInt64) async -> NetworkFrame? {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<NetworkFrame?, Never>) in
                let ready = state.withLock { state -> NetworkFrame?? in
                    if let frame = state.take() { return .some(frame) }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiters.append((id, continuation))
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> UnsafeContinuation<NetworkFrame?, Never>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(returning: nil)
        }
    }
}
