import BlockDevice
import NBDProtocol
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The transmission loop's own state: touched only by the connection thread.
struct NBDTransmission {
    /// The socket (or TLS socket pair end) transmission runs on.
    let descriptor: Int32
    var session: NBDServerSession
    var decoder: NBDRequestDecoder
    let device: any BlockDevice
    let sectorSize: Int
    /// The WRITE whose payload is arriving (nil while a refused request's payload is skipped).
    var write: (header: NBDRequestHeader, operation: NBDServerOperation, buffer: PageBuffer, filled: Int)?
    /// Stop reading requests: `NBD_CMD_DISC`, end of stream or shutdown.
    var reading = true
    /// Bytes received but not decoded yet because the connection was full (see `isFull`).
    var backlog: [UInt8] = []
}

// The connection thread in transmission: it runs the jobs of its request tasks, sends what they queued,
// polls the socket and the wake-up pipe, reads requests (WRITE payloads straight into their pages) and
// starts them. It stops reading while the connection holds too much (requests or bytes in flight, or
// replies the client does not read), which bounds what a hostile client can make it allocate.
extension NBDServerConnection {
    private static let stagingSize = 64 << 10
    /// Payload runs at least this long are read straight into the request's pages.
    private static let directMinimum = 2048
    /// Queued replies at least this large are sent while a batch of requests is still being started.
    private static let eagerFlush = 128 << 10

    func transmit(_ session: NBDServerSession, descriptor: Int32, leftover: [UInt8]) {
        let index = session.exportIndex
        let loop = TransmitLoop(
            self,
            NBDTransmission(
                descriptor: descriptor, session: session,
                decoder: NBDRequestDecoder(extendedHeaders: session.extendedHeaders, maxPayload: session.maxPayload),
                device: server.exports[index].device, sectorSize: server.sectorSizes[index]))
        if !leftover.isEmpty {
            guard leftover.withUnsafeBytes({ process($0, &loop.transmission) }) else { return }
        }
        guard let wakeup, let executor else { return }
        PollLoop.run(loop, wake: wakeup, runJobs: executor.runJobs)
    }

    /// The connection thread's side of its ``PollLoop`` in transmission. Right after traffic the next request
    /// is likely microseconds away: it polls without sleeping for a while (`NBDServerOptions.busyPollWindow`,
    /// XenCore's `SpinClock`) before sleeping in `poll`.
    private final class TransmitLoop: PollLoopClient {
        let connection: NBDServerConnection
        var transmission: NBDTransmission
        let staging = UnsafeMutableRawBufferPointer.allocate(
            byteCount: NBDServerConnection.stagingSize, alignment: 4096)
        var spin: SpinClock?
        /// Whether this round polls for requests.
        var wantRead = false

        init(_ connection: NBDServerConnection, _ transmission: NBDTransmission) {
            self.connection = connection
            self.transmission = transmission
            spin = connection.server.options.busyPollWindow.map { SpinClock(window: UInt64(max(0, $0.nanoseconds))) }
        }

        deinit { staging.deallocate() }

        func prepare(_ fds: inout [pollfd], jobsWaiting: Bool) -> PollLoopStep {
            let descriptor = transmission.descriptor
            let (pending, failed, queued) = connection.output.withLock { output -> (Bool, Int32, Int) in
                if output.flushPending {
                    output.flushPending = false
                    _ = output.flush(to: descriptor)
                }
                return (!output.isEmpty, output.failed, output.queuedBytes)
            }
            if failed != 0 { return .stop }
            let (requests, closing) = connection.state.withLock { ($0.requests, $0.closing) }
            if closing { transmission.reading = false }
            // After DISC (or at shutdown) every request in flight is answered before the connection closes.
            if !transmission.reading && requests == 0 && !pending && !jobsWaiting { return .stop }
            let full = connection.isFull(queued: queued)
            if !transmission.backlog.isEmpty, !full, transmission.reading {
                // Requests held back while the connection was full go first.
                let backlog = transmission.backlog
                transmission.backlog = []
                return backlog.withUnsafeBytes({ connection.process($0, &transmission) }) ? .again : .stop
            }
            wantRead = transmission.reading && !full && transmission.backlog.isEmpty
            let events = (wantRead ? Int16(POLLIN) : 0) | (pending ? Int16(POLLOUT) : 0)
            let entry = pollfd(fd: descriptor, events: events, revents: 0)
            if fds.count == 1 { fds.append(entry) } else { fds[1] = entry }
            return .wait(spin: spin != nil)
        }

        func keepSpinning(yielded: UInt64?) -> Bool { spin?.keepSpinning(yielded: yielded) ?? false }

        func ready(_ fds: [pollfd]) -> Bool {
            let events = fds[1].revents
            if events != 0 { spin?.touch() }
            let descriptor = transmission.descriptor
            if events & Int16(POLLOUT) != 0, connection.output.withLock({ $0.flush(to: descriptor) }) != 0 {
                return false
            }
            if events & (Int16(POLLERR) | Int16(POLLNVAL)) != 0 { return false }
            if events & (Int16(POLLIN) | Int16(POLLHUP)) != 0, wantRead {
                return connection.readOnce(descriptor, staging, &transmission)
            }
            return events & Int16(POLLHUP) == 0
        }
    }

    /// One read: straight into a WRITE's pages when a long payload run is due (the staging buffer catches
    /// what follows), else into the staging buffer. False when the connection is over (end of stream from
    /// a client that did not send `DISC`, an error, or a protocol violation).
    private func readOnce(
        _ descriptor: Int32, _ staging: UnsafeMutableRawBufferPointer, _ transmission: inout NBDTransmission
    ) -> Bool {
        var direct = 0
        let count: Int
        if let write = transmission.write, transmission.decoder.pendingPayload >= UInt64(Self.directMinimum) {
            let want = min(Int(transmission.decoder.pendingPayload), write.buffer.count - write.filled)
            var vectors = [
                iovec(iov_base: write.buffer.pointer + write.filled, iov_len: want),
                iovec(iov_base: staging.baseAddress, iov_len: staging.count),
            ]
            count = readv(descriptor, &vectors, 2)
            if count > 0 {
                direct = min(count, want)
                transmission.decoder.skipPayload(UInt64(direct))
                transmission.write!.filled += direct
                if transmission.write!.filled == write.buffer.count { startWrite(&transmission) }
            }
        } else {
            count = read(descriptor, staging.baseAddress, staging.count)
        }
        if count == 0 { return false }
        if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
        return process(UnsafeRawBufferPointer(rebasing: staging[0..<(count - direct)]), &transmission)
    }

    /// True while the connection holds as much as it may: no new request starts (one always may when it
    /// holds nothing, however large).
    private func isFull(queued: Int? = nil) -> Bool {
        let queued = queued ?? output.withLock { $0.queuedBytes }
        let options = server.options
        return state.withLock { state in
            (state.requests > 0 || queued > 0)
                && (state.requests >= options.maxRequestsInFlight || state.bytes + queued >= options.maxInFlightBytes)
        }
    }

    /// Decodes `bytes` and starts the requests in them, keeping what follows in the backlog once the
    /// connection is full; false on a protocol violation.
    func process(_ bytes: UnsafeRawBufferPointer, _ transmission: inout NBDTransmission) -> Bool {
        var input = bytes
        while transmission.reading {
            if transmission.decoder.isIdle, !input.isEmpty, isFull() {
                transmission.backlog = Array(input)
                return true
            }
            let event: NBDRequestEvent?
            do { event = try transmission.decoder.next(&input) } catch { return false }
            guard let event else { return true }
            switch event {
            case .request(let header):
                accept(header, &transmission)
                // Replies answered on the spot go out as soon as there is a socketful, not after the whole
                // batch of requests read at once: the client starts on the first while the rest are read.
                output.withLock { output in
                    if output.queuedBytes >= Self.eagerFlush { _ = output.flush(to: transmission.descriptor) }
                }
            case .payload(let piece):
                guard let write = transmission.write else { continue }  // a refused request's payload
                write.buffer.copy(from: piece, at: write.filled)
                transmission.write!.filled += piece.count
                if transmission.write!.filled == write.buffer.count { startWrite(&transmission) }
            }
        }
        return true
    }

    private func accept(_ header: NBDRequestHeader, _ transmission: inout NBDTransmission) {
        let session = transmission.session
        switch session.check(header) {
        case .failure(let refusal):
            // A refused WRITE's payload still arrives; `write` stays nil, so it is skipped.
            begin(bytes: 0)
            reply(items: [(session.errorReply(cookie: header.cookie, offset: header.offset, refusal), [])], bytes: 0)
        case .success(.disconnect):
            transmission.reading = false
        case .success(let operation):
            if case .write(_, let length, _) = operation {
                let buffer = server.pool.buffer(count: Int(length))
                begin(bytes: buffer.count)
                transmission.write = (header, operation, buffer, 0)
                if length == 0 { startWrite(&transmission) }
                return
            }
            start(operation, header, transmission)
        }
    }

    private func startWrite(_ transmission: inout NBDTransmission) {
        guard let write = transmission.write else { return }
        transmission.write = nil
        let (device, sector, session) = (transmission.device, transmission.sectorSize, transmission.session)
        Task(executorPreference: executor) {
            await self.perform(write.operation, write.header, payload: write.buffer, device, sector, session)
        }
    }

    // MARK: - Accounting and replies

    /// A request starts holding `bytes`.
    func begin(bytes: Int) {
        state.withLock { state in
            state.requests += 1
            state.bytes += bytes
        }
    }

    /// Queues a request's reply messages (each a header and payload pages) and ends its accounting.
    /// Dropped once the connection has ended.
    func reply(items: [([UInt8], [PageBuffer])], bytes: Int) {
        let live = state.withLock { state -> Bool in
            state.requests -= 1
            state.bytes -= bytes
            return !state.ended
        }
        guard live else { return }
        let mine = onIOThread
        output.withLock { output in
            for (header, payload) in items { output.append(header: header, payload: payload) }
            output.flushPending = true
        }
        if !mine { signal() }
    }

    /// Queues a READ's reply whose data is a leased file range (sent with `sendfile`) and ends its
    /// accounting. Dropped once the connection has ended.
    func reply(header: [UInt8], file: FileRangeLease) {
        let live = state.withLock { state -> Bool in
            state.requests -= 1
            return !state.ended
        }
        guard live else { return }
        output.withLock { output in
            output.append(header: header, file: file)
            output.flushPending = true
        }
        if !onIOThread { signal() }
    }
}
