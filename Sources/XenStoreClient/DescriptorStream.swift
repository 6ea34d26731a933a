import Glibc
import Synchronization

/// A byte stream over a file descriptor (a connected unix socket or the xenbus device) with one I/O thread:
/// the thread `poll`s the descriptor and a wake-up pipe, reads whatever arrives into a queue and hands
/// it to the one waiting `read`, and finishes writes a non-blocking `send` could not complete at once. No
/// blocking call ever runs on the cooperative pool: writers only try non-blocking sends, readers only park
/// continuations.
///
/// The descriptor is closed in `deinit`, after the thread has exited (the thread holds the stream), so a
/// descriptor number is never reused under a writer's feet.
final class DescriptorStream: Sendable {
    enum WriteMode: Sendable {
        /// `send(MSG_DONTWAIT)` with any chunking; leftovers are finished by the I/O thread.
        case stream
        /// One whole xenstore packet per `write(2)` (the xenbus device drops bytes beyond the first packet of
        /// a write); a write failing with an errno (older kernels, WATCH/UNWATCH) is answered with a
        /// synthesised `XS_ERROR` reply so that the request does not hang.
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
        var writes: [PendingWrite] = []
        var endOfStream = false
        var failure: DescriptorError?
        var closed = false
        var threadRunning = false
    }

    /// Stop reading from the descriptor while this much is queued and unread (back-pressure on the server).
    private static let queueLimit = 1 << 20

    let descriptor: Int32
    /// The read and write ends of the wake-up pipe.
    private let wakeup: Int32
    private let wakeupWriter: Int32
    private let mode: WriteMode
    private let state = Mutex(State())

    init(descriptor: Int32, mode: WriteMode) throws(DescriptorError) {
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else { throw DescriptorError(operation: "pipe", errno: errno) }
        for end in ends {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        self.descriptor = descriptor
        self.wakeup = ends[0]
        self.wakeupWriter = ends[1]
        self.mode = mode
    }

    deinit {
        Glibc.close(descriptor)
        Glibc.close(wakeup)
        Glibc.close(wakeupWriter)
    }

    /// Starts the I/O thread.
    func start() throws(DescriptorError) {
        state.withLock { $0.threadRunning = true }
        let result = IOThread.spawn { [self] in self.run() }
        if let error = result {
            state.withLock { $0.threadRunning = false }
            throw error
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
        let result = await withUnsafeContinuation {
            (continuation: UnsafeContinuation<Result<Void, DescriptorError>, Never>) in
            let (now, wake) = state.withLock { state -> (Result<Void, DescriptorError>?, Bool) in
                if state.closed || state.endOfStream {
                    return (.failure(state.failure ?? DescriptorError(operation: "write", errno: EPIPE)), false)
                }
                if !state.writes.isEmpty {
                    state.writes.append(PendingWrite(bytes: bytes, offset: 0, continuation: continuation))
                    return (nil, false)
                }
                switch mode {
                case .stream:
                    let sent = sendNow(bytes, from: 0)
                    switch sent {
                    case .failure(let error): return (.failure(error), false)
                    case .success(let offset) where offset == bytes.count: return (.success(()), false)
                    case .success(let offset):
                        state.writes.append(PendingWrite(bytes: bytes, offset: offset, continuation: continuation))
                        return (nil, true)
                    }
                case .packetPerWrite:
                    let synthesized = writePackets(bytes)
                    if !synthesized.isEmpty {
                        state.queue += synthesized
                        if let reader = state.reader {
                            state.reader = nil
                            let chunk = state.queue
                            state.queue = []
                            reader.resume(returning: .success(chunk))
                        }
                    }
                    return (.success(()), false)
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

    /// Writes each whole packet of `bytes` with its own `write(2)`; returns synthesised error replies for the
    /// packets the device refused.
    private func writePackets(_ bytes: [UInt8]) -> [UInt8] {
        var synthesized: [UInt8] = []
        var start = 0
        while start + 16 <= bytes.count {
            let length = Int(XenbusDeviceFraming.word(bytes, start + 12))
            let end = min(bytes.count, start + 16 + length)
            let status = bytes.withUnsafeBytes { buffer -> Int32 in
                while true {
                    let count = Glibc.write(descriptor, buffer.baseAddress! + start, end - start)
                    if count >= 0 { return 0 }
                    if errno != EINTR { return errno }
                }
            }
            if status != 0 {
                synthesized += XenbusDeviceFraming.errorReply(for: bytes, at: start, errno: status)
            }
            start = end
        }
        return synthesized
    }

    // MARK: - Closing

    /// Ends the stream: a parked read returns nil, later writes fail, the I/O thread exits.
    func close() {
        let (reader, writes) = state.withLock {
            state -> (UnsafeContinuation<Result<[UInt8]?, DescriptorError>, Never>?, [PendingWrite]) in
            guard !state.closed else { return (nil, []) }
            state.closed = true
            defer {
                state.reader = nil
                state.writes = []
            }
            return (state.reader, state.writes)
        }
        // Sockets: wake anything blocked on the peer too (no-op on the device).
        _ = shutdown(descriptor, Int32(SHUT_RDWR))
        signal()
        reader?.resume(returning: .success(nil))
        for write in writes {
            write.continuation.resume(returning: .failure(DescriptorError(operation: "write", errno: EPIPE)))
        }
    }

    private func signal() {
        var one: UInt8 = 1
        _ = Glibc.write(wakeupWriter, &one, 1)
    }

    // MARK: - The I/O thread

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        var fds = [
            pollfd(fd: descriptor, events: 0, revents: 0), pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            let (closed, wantWrite, paused) = state.withLock { state in
                (state.closed || state.endOfStream, !state.writes.isEmpty, state.queue.count >= Self.queueLimit)
            }
            if closed { break }
            fds[0].events = (paused ? 0 : Int16(POLLIN)) | (wantWrite ? Int16(POLLOUT) : 0)
            // A negative descriptor is skipped by poll: while paused with nothing to write, a hang-up (reported
            // even without requested events) must not make poll return at once, over and over.
            fds[0].fd = fds[0].events == 0 ? -1 : descriptor
            fds[0].revents = 0
            fds[1].revents = 0
            let ready = poll(&fds, 2, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                finish(DescriptorError(operation: "poll", errno: errno))
                break
            }
            if fds[1].revents != 0 {
                var drain = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
                _ = Glibc.read(wakeup, &drain, MemoryLayout.size(ofValue: drain))
            }
            let events = fds[0].revents
            if events & Int16(POLLOUT) != 0 || (paused && events & (Int16(POLLHUP) | Int16(POLLERR)) != 0) {
                // Paused readers still learn about a hang-up through the failing writes.
                finishWrites()
            }
            if events & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 && !paused {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress!, $0.count) }
                if count > 0 {
                    received(Array(buffer[0..<count]))
                } else if count == 0 {
                    finish(nil)
                    break
                } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                    finish(state.withLock { $0.closed } ? nil : DescriptorError(operation: "read", errno: errno))
                    break
                }
            }
        }
        state.withLock { $0.threadRunning = false }
    }

    private func received(_ bytes: [UInt8]) {
        let reader = state.withLock { state -> UnsafeContinuation<Result<[UInt8]?, DescriptorError>, Never>? in
            if let reader = state.reader {
                state.reader = nil
                return reader
            }
            state.queue += bytes
            return nil
        }
        reader?.resume(returning: .success(bytes))
    }

    private func finishWrites() {
        var done: [UnsafeContinuation<Result<Void, DescriptorError>, Never>] = []
        var failed: (DescriptorError, [UnsafeContinuation<Result<Void, DescriptorError>, Never>])?
        state.withLock { state in
            while var write = state.writes.first {
                switch sendNow(write.bytes, from: write.offset) {
                case .failure(let error):
                    failed = (error, state.writes.map(\.continuation))
                    state.writes = []
                    return
                case .success(let offset) where offset == write.bytes.count:
                    done.append(write.continuation)
                    state.writes.removeFirst()
                case .success(let offset):
                    write.offset = offset
                    state.writes[0] = write
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
        let (reader, writes) = state.withLock {
            state -> (UnsafeContinuation<Result<[UInt8]?, DescriptorError>, Never>?, [PendingWrite]) in
            state.endOfStream = true
            state.failure = error
            defer {
                state.reader = nil
                state.writes = []
            }
            // Bytes already queued are still delivered before the end: only a parked reader (empty queue) wakes.
            return (state.queue.isEmpty ? state.reader : nil, state.writes)
        }
        if let reader {
            if let error { reader.resume(returning: .failure(error)) } else { reader.resume(returning: .success(nil)) }
        }
        let failure = error ?? DescriptorError(operation: "write", errno: EPIPE)
        for write in writes { write.continuation.resume(returning: .failure(failure)) }
    }
}

/// A failed system call of a xenstore transport.
///
/// OCaml: `Unix.Unix_error`
public struct DescriptorError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The call that failed (`connect`, `send`, `read`, ...).
    public var operation: String
    /// Its errno.
    public var errno: Int32

    /// The error of `operation` with `errno`.
    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    /// `operation: strerror(errno)`.
    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

// MARK: - A plain pthread

/// Starts detached POSIX threads for blocking work (the cooperative pool must never block).
enum IOThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// Runs `body` on a new detached thread; returns the error if the thread could not be created.
    static func spawn(_ body: @escaping @Sendable () -> Void) -> DescriptorError? {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(
            &thread, nil,
            { context in
                guard let context else { return nil }
                let box = Unmanaged<Box>.fromOpaque(context).takeRetainedValue()
                box.body()
                return nil
            }, box)
        guard status == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            return DescriptorError(operation: "pthread_create", errno: status)
        }
        pthread_detach(thread)
        return nil
    }
}
