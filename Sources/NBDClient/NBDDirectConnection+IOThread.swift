import Glibc
import NBDProtocol
import XenCore

// The I/O thread: runs the jobs of tasks on its executor, flushes what they queued, polls the socket and
// the wake-up eventfd, reads replies and completes requests. It alone reads the socket, decodes and
// completes requests, so the decoder and the staging buffer are its locals.
extension NBDDirectConnection {
    /// Staging buffer for headers, small chunks and short reads.
    private static let stagingSize = 1 << 16
    /// Bytes read at a reply boundary while small replies are expected: several 4 KiB replies per read.
    /// While only large READs are in flight, a boundary read takes just a header (and OFFSET_DATA's offset)
    /// so that all of the data goes straight into the caller's pages.
    private static let boundaryRead = 32 << 10

    /// Bytes to read at a reply boundary now.
    private func boundary(smallReplies: Bool) -> Int {
        if smallReplies { return Self.boundaryRead }
        return extended ? 40 : structured ? 28 : 16
    }
    /// Smallest data run worth a read straight into the caller's pages.
    private static let directMinimum: UInt64 = 2048

    func run() {
        executor.attach()
        let loop = DirectLoop(self)
        if !leftover.isEmpty {
            // The server spoke before we asked: the decoder rejects it (no request matches).
            loop.ending = leftover.withUnsafeBytes { process($0, &loop.decoder) }
        }
        if loop.ending == nil { PollLoop.run(loop, wake: wakeup, runJobs: executor.runJobs) }
        finish(loop.ending ?? .disconnected)
    }

    /// The I/O thread's side of its ``PollLoop``: flushes what tasks queued, polls the socket (until the
    /// nearest request deadline when some request is timed), reads replies and completes requests. The
    /// decoder and the staging buffer are its own.
    private final class DirectLoop: PollLoopClient {
        let connection: NBDDirectConnection
        let staging = UnsafeMutableRawBufferPointer.allocate(
            byteCount: NBDDirectConnection.stagingSize, alignment: 4096)
        var decoder: NBDReplyDecoder
        /// What ended the connection, once something did.
        var ending: NBDError?
        /// The last read took all it asked for: more is likely waiting.
        var streaming = false

        init(_ connection: NBDDirectConnection) {
            self.connection = connection
            decoder = NBDReplyDecoder(
                structuredReplies: connection.structured || connection.extended, extendedHeaders: connection.extended)
        }

        deinit { staging.deallocate() }

        func prepare(_ fds: inout [pollfd], jobsWaiting: Bool) -> PollLoopStep {
            let descriptor = connection.descriptor
            let (wantWrite, writeFailed) = connection.output.withLock { output -> (Bool, Int32) in
                if output.flushPending {
                    output.flushPending = false
                    _ = output.flush(to: descriptor)
                }
                return (!output.isEmpty, output.failed)
            }
            if writeFailed != 0 {
                ending = NBDDirectConnection.error(writeFailed, "send")
                return .stop
            }
            let (closing, timed) = connection.state.withLock { ($0.closing, $0.timed > 0) }
            if closing {
                ending = .disconnected
                return .stop
            }
            if streaming && !wantWrite {
                // Read again without a poll.
                (ending, streaming) = connection.readOnce(staging, &decoder)
                return ending == nil ? .again : .stop
            }
            var wait: Int32 = -1
            if timed {
                let now = Int64(MonotonicClock.nanoseconds())
                if let nearest = connection.expire(now: now), !jobsWaiting {
                    wait = Int32(clamping: max(0, (nearest - now + 999_999) / 1_000_000))
                }
            }
            let entry = pollfd(fd: descriptor, events: Int16(POLLIN) | (wantWrite ? Int16(POLLOUT) : 0), revents: 0)
            if fds.count == 1 { fds.append(entry) } else { fds[1] = entry }
            return .wait(milliseconds: wait)
        }

        func ready(_ fds: [pollfd]) -> Bool {
            let events = fds[1].revents
            if events & Int16(POLLOUT) != 0 {
                let failed = connection.output.withLock { $0.flush(to: connection.descriptor) }
                if failed != 0 {
                    ending = NBDDirectConnection.error(failed, "send")
                    return false
                }
            }
            if events & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 {
                (ending, streaming) = connection.readOnce(staging, &decoder)
            }
            return ending == nil
        }

        func failed(errno: Int32) -> Bool {
            ending = .io("poll: \(String(cString: strerror(errno)))")
            return false
        }
    }

    /// The connection is over: flush what is queued (`NBD_CMD_DISC`), shut the socket, fail everything,
    /// hand the executor's jobs on and wake `close` callers.
    private func finish(_ error: NBDError) {
        _ = output.withLock { $0.flush(to: descriptor) }
        _ = shutdown(descriptor, Int32(SHUT_RDWR))
        failAll(error)
        executor.retire()
        let waiters = state.withLock { state -> [UnsafeContinuation<Void, Never>] in
            state.threadDone = true
            state.closing = true
            defer { state.closeWaiters = [] }
            return state.closeWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    static func error(_ code: Int32, _ operation: String) -> NBDError {
        code == ECONNRESET || code == EPIPE
            ? .disconnected : .io("\(operation): \(String(cString: strerror(code)))")
    }

    // MARK: - Reading

    /// One read from the socket: straight into the caller's pages when the decoder is inside a data run of
    /// a live request (the staging buffer catches what follows), else into the staging buffer. Returns the
    /// error that ends the connection, if any, and whether the read took all it asked for.
    private func readOnce(_ staging: UnsafeMutableRawBufferPointer, _ decoder: inout NBDReplyDecoder) -> (
        NBDError?, Bool
    ) {
        var count: Int
        var direct = 0
        var asked: Int
        let small = state.withLock { $0.smallReplies > 0 }
        var sink: DataSink?
        if let run = decoder.pendingData, run.remaining >= Self.directMinimum {
            sink = state.withLock { $0.sink(run.cookie, at: run.offset) } ?? nil
        }
        if let run = decoder.pendingData, case .pipe(let pipe)? = sink {
            // Data for a pipe READ: spliced from the socket, never through user space. The pipe has room for
            // the whole request (checked when it was submitted), so EAGAIN means the socket is drained.
            asked = Int(run.remaining)
            count = pipe.fill(from: descriptor, count: asked)
            if count > 0 {
                decoder.skipData(UInt64(count))
                state.withLock { $0.inFlight[run.cookie]?.covered += UInt64(count) }
                direct = count
            } else if count < 0, errno == EAGAIN, pipe.count >= pipe.capacity {
                // Full after all (its owner filled it behind our back): fail the READ, drop the rest.
                state.withLock { $0.spoilPipe(run.cookie, .io("the pipe of a READ is full")) }
                return (nil, true)
            }
        } else if let run = decoder.pendingData, case .buffers(let start, let buffers)? = sink, !buffers.isEmpty {
            var vectors: [iovec] = []
            vectors.reserveCapacity(min(buffers.count, 63) + 1)
            var position = Int(run.offset - start)
            var left = Int(run.remaining)
            for buffer in buffers where left > 0 && vectors.count < 63 {
                if position >= buffer.count {
                    position -= buffer.count
                    continue
                }
                let take = min(buffer.count - position, left)
                vectors.append(iovec(iov_base: buffer.pointer + position, iov_len: take))
                direct += take
                left -= take
                position = 0
            }
            vectors.append(iovec(iov_base: staging.baseAddress, iov_len: boundary(smallReplies: small)))
            asked = direct + boundary(smallReplies: small)
            count = readv(descriptor, vectors, Int32(vectors.count))
            if count > 0 {
                let taken = min(count, direct)
                decoder.skipData(UInt64(taken))
                state.withLock { $0.inFlight[run.cookie]?.covered += UInt64(taken) }
                direct = taken
            }
        } else {
            // Inside a data run nobody waits for (timed out, a spoiled pipe) or a short one: read it all
            // through staging.
            let size = decoder.pendingData.map { min(Self.stagingSize, Int($0.remaining) + Self.boundaryRead) }
            asked = size ?? boundary(smallReplies: small)
            count = read(descriptor, staging.baseAddress, asked)
        }
        if count == 0 { return (.disconnected, false) }
        if count < 0 {
            if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return (nil, false) }
            return (Self.error(errno, "read"), false)
        }
        return (process(UnsafeRawBufferPointer(rebasing: staging[0..<(count - direct)]), &decoder), count == asked)
    }

    /// Decodes `bytes` and applies every event; returns a protocol error that ends the connection.
    func process(_ bytes: UnsafeRawBufferPointer, _ decoder: inout NBDReplyDecoder) -> NBDError? {
        var input = bytes
        do throws(NBDProtocolError) {
            while let event = try decoder.next(
                &input, lookup: { cookie in state.withLock { $0.inFlight[cookie]?.info } })
            {
                try apply(event)
            }
        } catch {
            return .protocolError(error)
        }
        return nil
    }

    /// A data or hole chunk of `count` bytes at export `offset`: counted, then written into the request's
    /// pages (`into`, given the position in them) or appended to its pipe (`pipe`, false if it would not fit),
    /// or dropped.
    private func deliver(
        _ cookie: UInt64, at offset: UInt64, count: UInt64, into: (Int, [PageBuffer]) -> Void,
        pipe fill: (SplicePipe) -> Bool
    ) throws(NBDProtocolError) {
        guard let sink = state.withLock({ $0.sink(cookie, at: offset, covering: count) }) else {
            throw .unknownCookie(cookie)
        }
        switch sink {
        case .buffers(let start, let buffers)?: into(Int(offset - start), buffers)
        case .pipe(let pipe)?:
            if !fill(pipe) { state.withLock { $0.spoilPipe(cookie, .io("the pipe of a READ is full")) } }
        case nil: break
        }
    }

    private func apply(_ event: NBDReplyEvent) throws(NBDProtocolError) {
        switch event {
        case .data(let cookie, let offset, let bytes):
            try deliver(
                cookie, at: offset, count: UInt64(bytes.count),
                into: { NBDChannelHandler.copy(bytes, into: $1, at: $0) }, pipe: { $0.append(bytes) })
        case .hole(let cookie, let offset, let length):
            try deliver(
                cookie, at: offset, count: length,
                into: { NBDChannelHandler.zero($1, at: $0, count: Int(length)) }, pipe: { $0.appendZeroes(Int(length)) }
            )
        case .blockStatus(let cookie, let contextID, let extents):
            state.withLock { $0.inFlight[cookie]?.completion.extents.append((contextID, extents)) }
        case .error(let cookie, let errno, let message, let offset):
            let known = state.withLock { state -> Bool in
                guard let pending = state.inFlight[cookie] else { return false }
                if pending.error == nil {
                    state.inFlight[cookie]!.error = .serverError(
                        command: pending.info.command, offset: offset ?? pending.info.offset, errno: errno,
                        message: message)
                }
                return true
            }
            guard known else { throw .unknownCookie(cookie) }
        case .done(let cookie):
            guard let pending = state.withLock({ $0.inFlight[cookie] }) else { throw .unknownCookie(cookie) }
            if let error = pending.error {
                complete(cookie, .failure(error))
            } else if pending.info.command == .read, pending.covered != pending.info.length {
                // Chunks must tile the request exactly; a short or overlapping answer is not data.
                complete(
                    cookie,
                    .failure(
                        .protocolError(
                            .outsideRequest(cookie: cookie, offset: pending.info.offset, length: pending.covered))))
            } else {
                complete(cookie, .success(pending.completion))
            }
        }
    }
}
