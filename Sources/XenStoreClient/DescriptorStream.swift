import Glibc
import Synchronization
import XenCore

/// A byte stream over a file descriptor (a connected unix socket or the xenbus device) with one I/O thread:
/// the thread `poll`s the descriptor and a wake-up pipe, reads whatever arrives into a queue and hands
/// it to the one waiting `read`, and finishes writes a non-blocking `send` could not complete at once. No
/// blocking call ever runs on the cooperative pool: writers only try non-blocking sends, readers only park
/// continuations. While a push receiver sends requests one at a time, the thread stays awake (polling
/// without blocking) for up to `SpinClock.window` after the last traffic, then sleeps in `poll` again.
///
/// The descriptor is closed in `deinit`, after the thread has exited (the thread holds the stream), so a
/// descriptor number is never reused under a writer's feet.
final class DescriptorStream: Sendable {
    enum WriteMode: Sendable {
        /// `send(MSG_DONTWAIT)` with any chunking; leftovers are finished by the I/O thread.
        case stream
        /// The xenbus device: one whole xenstore packet per `write(2)` (the device drops bytes beyond the
        /// first packet of a write), and only one packet at the device until its reply is read back
        /// (`XenbusDeviceGate` says why); a write failing with an errno (older kernels, WATCH/UNWATCH) is
        /// answered with a synthesised `XS_ERROR` reply so that the request does not hang.
        case packetPerWrite
    }

    private struct PendingWrite {
        var bytes: [UInt8]
        var offset: Int
        var continuation: UnsafeContinuation<Result<Void, DescriptorError>, Never>
    }

    private struct State {
        var queue: [UInt8] = []
        var reader: UnsafeContinuation<Result<[UInt8]?, DescriptorError>, Never>?
        var endOfStream = false
        var failure: DescriptorError?
        var closed = false
        var threadRunning = false
        /// Push mode: received bytes go straight to this receiver on the I/O thread (no reader task).
        var pusher: Pusher?
    }

    /// A push-mode receiver: `receive` gets bytes in order, `end` once at end of stream (nil) or failure;
    /// `spin` says whether the I/O thread should stay awake after traffic (a lone request waiting: true; many
    /// in flight: false, since replies then arrive in bursts and sleeping lets them gather into one read).
    typealias Pusher = (
        receive: @Sendable ([UInt8]) -> Void, end: @Sendable (DescriptorError?) -> Void, spin: @Sendable () -> Bool
    )

    /// Stop reading from the descriptor while this much is queued and unread (back-pressure on the server).
    private static let queueLimit = 1 << 20

    let descriptor: Int32
    /// Wakes the I/O thread out of `poll`.
    private let wakeup: WakeSignal
    private let mode: WriteMode
    private let state = Mutex(State())
    /// Writes not yet fully sent, oldest first. A lock of their own: a writer holds it across its
    /// non-blocking `send`, and the I/O thread's reads must not wait for that.
    private let writes = Mutex<[PendingWrite]>([])
    /// Whether `writes` is non-empty, for the I/O thread's loop: it must not take `writes` each round (a writer
    /// holds it across `send`, which may be preempted as it wakes the server, and waiting for it costs the I/O
    /// thread a futex sleep and an extra wake-up per request). Changed only under `writes`.
    private let writesWaiting = Atomic<Bool>(false)
    /// Bumped by every write, so that the spinning I/O thread (see `run`) notices a request just went out.
    private let writeCount = Atomic<UInt>(0)
    /// Set once the stream is closed or ended, checked by writers without taking `state`.
    private let ended = Atomic<Bool>(false)
    /// The I/O thread as a task executor (`XenStoreClient.executor`): a task that prefers it is resumed right on
    /// the thread that read its reply, so a round trip costs one thread wake-up, as a blocking `xs_read` does,
    /// instead of two (I/O thread, then a pool thread).
    let executor: IOThreadExecutor
    /// Device mode: which packet may be written when (one at the device at a time).
    private let gate = Mutex(XenbusDeviceGate())
    /// Held while handing bytes to the reader or receiver, so that deliveries from the I/O thread, from a
    /// writer (synthesised device errors) and from `startPushing` (bytes queued before) never reorder.
    private let delivery = Mutex(())

    init(descriptor: Int32, mode: WriteMode) throws(DescriptorError) {
        do {
            wakeup = try WakeSignal()
        } catch {
            throw DescriptorError(operation: "pipe", errno: error.errno)
        }
        self.descriptor = descriptor
        self.mode = mode
        executor = IOThreadExecutor(wake: wakeup)
    }

    deinit {
        Glibc.close(descriptor)
    }

    /// Starts the I/O thread.
    func start() throws(DescriptorError) {
        state.withLock { $0.threadRunning = true }
        let status = DetachedThread.spawn { [self] in self.run() }
        if status != 0 {
            state.withLock { $0.threadRunning = false }
            throw DescriptorError(operation: "pthread_create", errno: status)
        }
    }

    // MARK: - Reading

    func read() async throws(DescriptorError) -> [UInt8]? {
        let result = await withUnsafeContinuation {
            (continuation: UnsafeContinuation<Result<[UInt8]?, DescriptorError>, Never>) in
            let (now, wake) = state.withLock { state -> (Result<[UInt8]?, DescriptorError>?, Bool) in
                if !state.queue.isEmpty {
                    let wasPaused = state.queue.count >= Self.queueLimit
                    defer { state.queue = [] }
                    return (.success(state.queue), wasPaused)
                }
                if let failure = state.failure { return (.failure(failure), false) }
                if state.endOfStream || state.closed { return (.success(nil), false) }
                state.reader = continuation
                return (nil, false)
            }
            if wake { signal() }
            if let now { continuation.resume(returning: now) }
        }
        return try result.get()
    }

    // MARK: - Writing

    func write(_ bytes: [UInt8]) async throws(DescriptorError) {
        guard !bytes.isEmpty else { return }
        if mode == .packetPerWrite {
            // Queued behind the packet at the device (if any); the I/O thread writes it once that one's
            // reply is read. Done here means accepted, as a socket's buffer accepts bytes.
            guard !ended.load(ordering: .acquiring) else { throw DescriptorError(operation: "write", errno: EPIPE) }
            if let first = gate.withLock({ $0.submit(bytes) }) { writeToDevice(first) }
            return
        }
        let result = await withUnsafeContinuation {
            (continuation: UnsafeContinuation<Result<Void, DescriptorError>, Never>) in
            let (now, wake) = writes.withLock { writes -> (Result<Void, DescriptorError>?, Bool) in
                if ended.load(ordering: .acquiring) {
                    return (.failure(DescriptorError(operation: "write", errno: EPIPE)), false)
                }
                writeCount.add(1, ordering: .relaxed)
                if !writes.isEmpty {
                    writes.append(PendingWrite(bytes: bytes, offset: 0, continuation: continuation))
                    return (nil, false)
                }
                switch sendNow(bytes, from: 0) {
                case .failure(let error): return (.failure(error), false)
                case .success(let offset) where offset == bytes.count: return (.success(()), false)
                case .success(let offset):
                    writes.append(PendingWrite(bytes: bytes, offset: offset, continuation: continuation))
                    writesWaiting.store(true, ordering: .releasing)
                    return (nil, true)
                }
            }
            if wake { signal() }
            if let now { continuation.resume(returning: now) }
        }
        try result.get()
    }

    /// Sends from `offset` until done or the socket is full; returns the new offset.
    private func sendNow(_ bytes: [UInt8], from offset: Int) -> Result<Int, DescriptorError> {
        var offset = offset
        while offset < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                Glibc.send(
                    descriptor, buffer.baseAddress! + offset, buffer.count - offset,
                    Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
            }
            if count > 0 {
                offset += count
            } else if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                return .success(offset)
            } else if count < 0 && errno == EINTR {
                continue
            } else {
                return .failure(DescriptorError(operation: "send", errno: count == 0 ? EPIPE : errno))
            }
        }
        return .success(offset)
    }

    /// Writes `first`, the packet the gate just let through, with one `write(2)`. A packet the device refuses
    /// (an errno, nothing queued) is answered with a synthesised `XS_ERROR` reply, and the next waiting
    /// packet goes in its place.
    private func writeToDevice(_ first: [UInt8]) {
        var next: [UInt8]? = first
        while let packet = next {
            let status = packet.withUnsafeBytes { buffer -> Int32 in
                guard let base = buffer.baseAddress else { return EINVAL }
                while true {
                    if Glibc.write(descriptor, base, buffer.count) >= 0 {
                        writeCount.add(1, ordering: .relaxed)
                        return 0
                    }
                    if errno != EINTR { return errno }
                }
            }
            guard status != 0 else { return }
            deliver(XenbusDeviceFraming.errorReply(for: packet, at: 0, errno: status))
            next = gate.withLock { $0.writeFailed() }
        }
    }

    // MARK: - Closing

    /// Ends the stream: a parked read returns nil, later writes fail, the I/O thread exits.
    func close() {
        let reader = state.withLock { state -> UnsafeContinuation<Result<[UInt8]?, DescriptorError>, Never>? in
            guard !state.closed else { return nil }
            state.closed = true
            defer { state.reader = nil }
            return state.reader
        }
        ended.store(true, ordering: .releasing)
        gate.withLock { $0.close() }
        let pending = writes.withLock { writes in
            defer {
                writes = []
                writesWaiting.store(false, ordering: .releasing)
            }
            return writes
        }
        // Sockets: wake anything blocked on the peer too (no-op on the device).
        _ = shutdown(descriptor, Int32(SHUT_RDWR))
        signal()
        reader?.resume(returning: .success(nil))
        delivery.withLock { _ in endPushing(nil) }
        for write in pending {
            write.continuation.resume(returning: .failure(DescriptorError(operation: "write", errno: EPIPE)))
        }
    }

    func signal() { wakeup.signal() }

    // MARK: - The I/O thread

    private func run() {
        executor.attach()
        PollLoop.run(StreamLoop(self), wake: wakeup, runJobs: executor.runJobs)
        state.withLock { $0.threadRunning = false }
        executor.retire()
    }

    /// The I/O thread's side of its ``PollLoop``: reads whatever arrives (unless the reader is too far behind),
    /// finishes writes the socket could not take at once, and while a push receiver sends requests one at a
    /// time stays awake for up to `SpinClock.window` after the last traffic.
    private final class StreamLoop: PollLoopClient {
        let stream: DescriptorStream
        var buffer = [UInt8](repeating: 0, count: 65536)
        var spin: SpinClock
        var paused = false
        var spinWanted: (@Sendable () -> Bool)?

        init(_ stream: DescriptorStream) {
            self.stream = stream
            spin = SpinClock(writes: stream.writeCount.load(ordering: .relaxed))
        }

        func prepare(_ fds: inout [pollfd], jobsWaiting: Bool) -> PollLoopStep {
            let (closed, paused, spinWanted) = stream.state.withLock { state in
                let paused = state.queue.count >= DescriptorStream.queueLimit
                return (state.closed || state.endOfStream, paused, state.pusher?.spin)
            }
            if closed { return .stop }
            (self.paused, self.spinWanted) = (paused, spinWanted)
            let wantWrite = stream.writesWaiting.load(ordering: .acquiring)
            let events = (paused ? 0 : Int16(POLLIN)) | (wantWrite ? Int16(POLLOUT) : 0)
            // A negative descriptor is skipped by poll: while paused with nothing to write, a hang-up (reported
            // even without requested events) must not make poll return at once, over and over.
            let entry = pollfd(fd: events == 0 ? -1 : stream.descriptor, events: events, revents: 0)
            if fds.count == 1 { fds.append(entry) } else { fds[1] = entry }
            // While requests go one at a time (the receiver says so), the next reply or request is likely
            // microseconds after the last traffic: the reply should find this thread awake. A sleep in poll and
            // its wake-up cost more than the rest of the round trip, and a blocking `xs_read` pays only one
            // wake-up where we would pay two (this thread, then the requester's pool thread).
            return .wait(spin: !paused && spinWanted != nil)
        }

        func keepSpinning(yielded: UInt64?) -> Bool {
            guard let spinWanted, spinWanted() else { return false }
            return spin.keepSpinning(yielded: yielded, writes: stream.writeCount.load(ordering: .relaxed))
        }

        func ready(_ fds: [pollfd]) -> Bool {
            let events = fds[1].revents
            if events & Int16(POLLOUT) != 0 || (paused && events & (Int16(POLLHUP) | Int16(POLLERR)) != 0) {
                // Paused readers still learn about a hang-up through the failing writes.
                stream.finishWrites()
            }
            guard events & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 && !paused else { return true }
            let count = buffer.withUnsafeMutableBytes { Glibc.read(stream.descriptor, $0.baseAddress!, $0.count) }
            if count > 0 {
                spin.touch()
                stream.received(Array(buffer[0..<count]))
            } else if count == 0 {
                stream.finish(nil)
                return false
            } else if case let code = errno, code != EAGAIN && code != EWOULDBLOCK && code != EINTR {
                let closed = stream.state.withLock { $0.closed }
                stream.finish(closed ? nil : DescriptorError(operation: "read", errno: code))
                return false
            }
            return true
        }

        func failed(errno: Int32) -> Bool {
            stream.finish(DescriptorError(operation: "poll", errno: errno))
            return false
        }
    }

    /// Bytes read from the descriptor: on the device, a reply lets the next packet in (written first, so that
    /// its round trip overlaps the delivery); then the bytes are delivered.
    private func received(_ bytes: [UInt8]) {
        if mode == .packetPerWrite, let next = gate.withLock({ $0.received(bytes) }) { writeToDevice(next) }
        deliver(bytes)
    }

    /// Hands bytes to the receiver (push mode) or the parked reader, or queues them.
    private func deliver(_ bytes: [UInt8]) {
        delivery.withLock { _ in
            let (pusher, reader) = state.withLock {
                state -> (Pusher?, UnsafeContinuation<Result<[UInt8]?, DescriptorError>, Never>?) in
                if let pusher = state.pusher { return (pusher, nil) }
                if let reader = state.reader {
                    state.reader = nil
                    return (nil, reader)
                }
                state.queue += bytes
                return (nil, nil)
            }
            if let pusher { pusher.receive(bytes) } else { reader?.resume(returning: .success(bytes)) }
        }
    }

    /// Switches to push mode: bytes already queued, then everything received, go to `receive` on the I/O
    /// thread; `end` runs once when the stream ends.
    func startPushing(_ pusher: Pusher) {
        delivery.withLock { _ in
            let (queued, ended, failure) = state.withLock { state -> ([UInt8], Bool, DescriptorError?) in
                state.pusher = pusher
                defer { state.queue = [] }
                return (state.queue, state.endOfStream || state.closed, state.failure)
            }
            if !queued.isEmpty { pusher.receive(queued) }
            if ended { endPushing(failure) }
        }
    }

    /// Tells the receiver the stream ended, once, and lets go of it (it may hold the client's state).
    private func endPushing(_ error: DescriptorError?) {
        let pusher = state.withLock { state -> Pusher? in
            defer { state.pusher = nil }
            return state.pusher
        }
        pusher?.end(error)
    }

    private func finishWrites() {
        var done: [UnsafeContinuation<Result<Void, DescriptorError>, Never>] = []
        var failed: (DescriptorError, [UnsafeContinuation<Result<Void, DescriptorError>, Never>])?
        writes.withLock { writes in
            while var write = writes.first {
                switch sendNow(write.bytes, from: write.offset) {
                case .failure(let error):
                    failed = (error, writes.map(\.continuation))
                    writes = []
                    writesWaiting.store(false, ordering: .releasing)
                    return
                case .success(let offset) where offset == write.bytes.count:
                    done.append(write.continuation)
                    writes.removeFirst()
                    if writes.isEmpty { writesWaiting.store(false, ordering: .releasing) }
                case .success(let offset):
                    write.offset = offset
                    writes[0] = write
                    return
                }
            }
        }
        for continuation in done { continuation.resume(returning: .success(())) }
        if let (error, continuations) = failed {
            for continuation in continuations { continuation.resume(returning: .failure(error)) }
        }
    }

    /// End of stream (`error` nil) or a read failure: the parked read and pending writes learn about it.
    private func finish(_ error: DescriptorError?) {
        let reader = state.withLock { state -> UnsafeContinuation<Result<[UInt8]?, DescriptorError>, Never>? in
            state.endOfStream = true
            state.failure = error
            defer { state.reader = nil }
            // Bytes already queued are still delivered before the end: only a parked reader (empty queue) wakes.
            return state.queue.isEmpty ? state.reader : nil
        }
        ended.store(true, ordering: .releasing)
        gate.withLock { $0.close() }
        let pending = writes.withLock { writes in
            defer {
                writes = []
                writesWaiting.store(false, ordering: .releasing)
            }
            return writes
        }
        if let reader {
            if let error { reader.resume(returning: .failure(error)) } else { reader.resume(returning: .success(nil)) }
        }
        let failure = error ?? DescriptorError(operation: "write", errno: EPIPE)
        for write in pending { write.continuation.resume(returning: .failure(failure)) }
        delivery.withLock { _ in endPushing(error) }
    }
}
