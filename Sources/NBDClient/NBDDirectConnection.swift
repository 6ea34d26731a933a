import Glibc
import NBDProtocol
import NIOCore
import NIOPosix
import Synchronization
import XenCore

/// The transmission phase of a plain (non-TLS) connection, off NIO: after the handshake the socket moves
/// to one I/O thread of its own that `poll`s it, reads replies (READ data straight into the caller's pages
/// when it can) and completes requests, as libnbd's aio loop does. Requests are written by the submitting
/// thread with a non-blocking gathering `sendmsg` (the I/O thread finishes what the socket did not take).
///
/// The I/O thread is also a serial and task executor (``NBDClient/executor``): a task running on it
/// submits, sleeps and is resumed on the thread that read its reply, so a round trip costs one thread
/// wake-up (the kernel waking the I/O thread), like a blocking `nbd_pread`.
///
/// Everything that completes or fails a request runs on the I/O thread (replies, timeouts, the end of the
/// connection), so no request is ever failed while the thread is still writing into its pages.
final class NBDDirectConnection: Sendable {
    struct Pending {
        var info: NBDRequestInfo
        var buffers: [PageBuffer]
        var covered: UInt64 = 0
        var error: NBDError?
        var completion = NBDCompletion()
        /// CLOCK_MONOTONIC nanoseconds after which the request times out.
        var deadline: Int64?
        /// Timed out: the caller has gone; a late reply is consumed and its data dropped.
        var abandoned = false
        /// Not a large READ: its reply is small (see `State.smallReplies`).
        var small = true
        /// A READ whose data goes into this pipe (spliced from the socket) instead of `buffers`.
        var pipe: SplicePipe?
        var continuation: UnsafeContinuation<Result<NBDCompletion, NBDError>, Never>?
    }

    struct State {
        var inFlight: [UInt64: Pending] = [:]
        /// Results of requests that finished before their submitter started waiting.
        var finished: [UInt64: Result<NBDCompletion, NBDError>] = [:]
        var nextCookie: UInt64 = 1
        /// Set once the connection ended; later submissions fail with it.
        var failure: NBDError?
        var closing = false
        var threadDone = false
        var closeWaiters: [UnsafeContinuation<Void, Never>] = []
        /// In-flight requests with a deadline (the I/O thread only scans for expiry when there are any).
        var timed = 0
        /// In-flight requests whose reply is small (anything but a READ of at least `largeRead` bytes):
        /// while there are none, the I/O thread reads headers alone and all data straight into pages.
        var smallReplies = 0

        /// Where the data of request `cookie` at byte `offset` of the export goes: nil for an unknown cookie,
        /// `.some(nil)` when it is dropped (timed out, or a pipe READ answered out of order, which fails it).
        /// A pipe takes data in order only, so a chunk that does not start where the last one ended spoils it.
        /// `covering`: bytes of the request the caller delivers now (a whole chunk), counted in the same step;
        /// 0 when it counts them once it knows how many a read took.
        mutating func sink(_ cookie: UInt64, at offset: UInt64, covering: UInt64 = 0) -> DataSink?? {
            guard let pending = inFlight[cookie] else { return nil }
            inFlight[cookie]!.covered += covering
            if pending.abandoned { return .some(nil) }
            guard let pipe = pending.pipe else { return .buffers(pending.info.offset, pending.buffers) }
            guard offset &- pending.info.offset == pending.covered else {
                spoilPipe(cookie, .unsupported("a READ into a pipe answered out of order"))
                return .some(nil)
            }
            return .pipe(pipe)
        }

        /// A pipe READ fails with `error` once its reply is over; the rest of its data is dropped.
        mutating func spoilPipe(_ cookie: UInt64, _ error: NBDError) {
            guard inFlight[cookie] != nil else { return }
            inFlight[cookie]!.pipe = nil
            inFlight[cookie]!.buffers = []
            if inFlight[cookie]!.error == nil { inFlight[cookie]!.error = error }
        }
    }

    /// Where a data run goes.
    enum DataSink {
        /// Pages from this export offset on.
        case buffers(UInt64, [PageBuffer])
        /// Appended to a pipe, in order.
        case pipe(SplicePipe)
    }

    let descriptor: Int32
    let structured: Bool
    let extended: Bool
    /// Bytes the server sent before transmission started (read by NIO during the handshake).
    let leftover: [UInt8]
    /// Wakes the I/O thread out of `poll`.
    let wakeup: WakeSignal
    let state = Mutex(State())
    let output = Mutex(SocketOutputQueue())
    /// The I/O thread as a serial and task executor (`NBDClient.taskExecutor(connection:)`): a task or actor
    /// on it is resumed right on the thread that read its reply, and its next request is batched into that
    /// thread's next `sendmsg`. Once the connection is gone, one event loop takes over, so an actor on it
    /// stays serial.
    let executor: IOThreadExecutor

    /// Takes ownership of `descriptor`, a connected socket whose handshake is done.
    init(descriptor: Int32, leftover: [UInt8], structured: Bool, extended: Bool) throws(NBDError) {
        do { wakeup = try WakeSignal() } catch {
            Glibc.close(descriptor)
            throw .io("pipe: \(String(cString: strerror(error.errno)))")
        }
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        self.descriptor = descriptor
        self.leftover = leftover
        self.structured = structured
        self.extended = extended
        executor = IOThreadExecutor(
            wake: wakeup, fallback: .serial(MultiThreadedEventLoopGroup.singleton.next().executor))
    }

    /// READs at least this large get their data read straight into the caller's pages, headers alone.
    static let largeRead: UInt64 = 64 << 10

    deinit {
        // The I/O thread holds the connection until it exits, so nobody can be using the descriptor.
        Glibc.close(descriptor)
    }

    /// Starts the I/O thread.
    func start() throws(NBDError) {
        // On failure the descriptor is closed by deinit, once, like every other exit.
        guard DetachedThread.spawn({ [self] in run() }) == 0 else { throw .io("cannot start the NBD I/O thread") }
    }

    var onIOThread: Bool { executor.isOnThread }

    func signal() { wakeup.signal() }

    // MARK: - Submitting

    /// Registers and sends a request; its result is collected with ``wait(_:isolation:)``. Callable from
    /// any thread. `timeout` in nanoseconds. `pipe`: a READ's data is spliced into it, a WRITE's payload
    /// spliced from it.
    func submit(
        command: NBDCommand, flags: NBDCommandFlags, offset: UInt64, length: UInt64, payload: [PageBuffer],
        file: FileRangeLease? = nil, pipe: SplicePipe? = nil, buffers: [PageBuffer], timeout: Int64?
    ) -> Result<UInt64, NBDError> {
        let deadline = timeout.map { Int64(MonotonicClock.nanoseconds()) + $0 }
        let registered = state.withLock { state -> Result<UInt64, NBDError> in
            if let failure = state.failure { return .failure(failure) }
            if state.closing { return .failure(.disconnected) }
            let cookie = state.nextCookie
            state.nextCookie &+= 1
            let small = command != .read || length < Self.largeRead
            state.inFlight[cookie] = Pending(
                info: NBDRequestInfo(command: command, offset: offset, length: length), buffers: buffers,
                deadline: deadline, small: small, pipe: command == .read ? pipe : nil)
            if deadline != nil { state.timed += 1 }
            if small { state.smallReplies += 1 }
            return .success(cookie)
        }
        guard case .success(let cookie) = registered else { return registered }
        let request = NBDRequest(flags: flags, command: command, cookie: cookie, offset: offset, length: length)
        let pipePayload = command == .write ? pipe.map { ($0, Int(length)) } : nil
        send(
            request.encode(extended: extended), payload: payload, file: file, pipe: pipePayload, timed: deadline != nil)
        return .success(cookie)
    }

    /// Queues bytes for the socket: the I/O thread batches its own and flushes them before it polls; other
    /// threads send at once when nothing is queued ahead of them, else leave it to the I/O thread.
    private func send(
        _ header: [UInt8], payload: [PageBuffer], file: FileRangeLease? = nil, pipe: (SplicePipe, Int)? = nil,
        timed: Bool
    ) {
        let mine = onIOThread
        let wake = output.withLock { output -> Bool in
            let wasEmpty = output.isEmpty
            if let (pipe, count) = pipe {
                output.append(header: header, pipe: pipe, count: count)
            } else if let file {
                output.append(header: header, file: file)
            } else {
                output.append(header: header, payload: payload)
            }
            if mine {
                output.flushPending = true
                return false
            }
            guard wasEmpty else { return false }
            let failed = output.flush(to: descriptor)
            // Something left over (socket full) or failed: the I/O thread takes it from here.
            return failed != 0 || !output.isEmpty
        }
        // A request with a deadline may need a shorter poll than the one the thread sleeps in.
        if wake || (timed && !mine) { signal() }
    }

    /// Waits for the request `cookie` returned by ``submit``.
    func wait(_ cookie: UInt64, isolation: isolated (any Actor)? = #isolation) async -> Result<NBDCompletion, NBDError>
    {
        await withUnsafeContinuation(isolation: isolation) { continuation in
            let ready = state.withLock { state -> Result<NBDCompletion, NBDError>? in
                if let result = state.finished.removeValue(forKey: cookie) { return result }
                if state.inFlight[cookie] != nil {
                    state.inFlight[cookie]!.continuation = continuation
                    return nil
                }
                return .failure(state.failure ?? .disconnected)
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    // MARK: - Closing

    /// Sends `NBD_CMD_DISC` (no reply comes), then closes.
    func disconnect() async {
        let open = state.withLock { $0.failure == nil && !$0.closing }
        if open {
            let request = NBDRequest(flags: [], command: .disconnect, cookie: 0, offset: 0, length: 0)
            send(request.encode(extended: extended), payload: [], timed: false)
        }
        await close()
    }

    /// Ends the connection: requests in flight fail with ``NBDError/disconnected``; returns once the I/O
    /// thread has let go of the socket.
    func close() async {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                state.closing = true
                if state.threadDone { return true }
                state.closeWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() } else { signal() }
        }
    }

    /// Asks the I/O thread to end the connection without waiting (the client is gone).
    func closeSoon() {
        state.withLock { $0.closing = true }
        signal()
    }

    // MARK: - Completing (I/O thread)

    /// Finishes a request: resumes its waiter, or keeps the result for a waiter still to come.
    func complete(_ cookie: UInt64, _ result: Result<NBDCompletion, NBDError>) {
        let continuation = state.withLock { state -> UnsafeContinuation<Result<NBDCompletion, NBDError>, Never>? in
            guard let pending = state.inFlight.removeValue(forKey: cookie) else { return nil }
            if pending.deadline != nil { state.timed -= 1 }
            if pending.small { state.smallReplies -= 1 }
            if pending.abandoned { return nil }
            if let continuation = pending.continuation { return continuation }
            state.finished[cookie] = result
            return nil
        }
        continuation?.resume(returning: result)
    }

    /// Fails requests whose deadline passed; returns the nearest remaining deadline.
    func expire(now: Int64) -> Int64? {
        var expired: [UnsafeContinuation<Result<NBDCompletion, NBDError>, Never>] = []
        var failures: [NBDError] = []
        let next = state.withLock { state -> Int64? in
            guard state.timed > 0 else { return nil }
            var nearest: Int64?
            for (cookie, pending) in state.inFlight where !pending.abandoned {
                guard let deadline = pending.deadline else { continue }
                guard deadline <= now else {
                    nearest = min(nearest ?? deadline, deadline)
                    continue
                }
                let error = NBDError.timedOut(operation: "\(pending.info.command) request")
                state.inFlight[cookie]!.abandoned = true
                state.inFlight[cookie]!.buffers = []
                state.inFlight[cookie]!.pipe = nil
                state.inFlight[cookie]!.continuation = nil
                if let continuation = pending.continuation {
                    expired.append(continuation)
                    failures.append(error)
                } else {
                    state.finished[cookie] = .failure(error)
                }
            }
            return nearest
        }
        for (continuation, error) in zip(expired, failures) { continuation.resume(returning: .failure(error)) }
        return next
    }

    /// The connection is over: every request in flight fails with `error`, later ones at once.
    func failAll(_ error: NBDError) {
        let waiting = state.withLock { state -> [UnsafeContinuation<Result<NBDCompletion, NBDError>, Never>] in
            if state.failure == nil { state.failure = error }
            var waiting: [UnsafeContinuation<Result<NBDCompletion, NBDError>, Never>] = []
            for (cookie, pending) in state.inFlight where !pending.abandoned {
                if let continuation = pending.continuation {
                    waiting.append(continuation)
                } else {
                    state.finished[cookie] = .failure(error)
                }
            }
            state.inFlight.removeAll()
            state.timed = 0
            state.smallReplies = 0
            return waiting
        }
        for continuation in waiting { continuation.resume(returning: .failure(error)) }
    }
}
