import NBDProtocol
import NIOCore
import NIOTLS
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// What a finished request produced.
struct NBDCompletion: Sendable {
    /// Block status extents by context id (BLOCK_STATUS only).
    var extents: [(contextID: UInt32, extents: [NBDExtent])] = []
}

/// The NIO handler under one NBD connection. During the handshake it hands out exact byte counts to the
/// negotiation code; afterwards it runs the reply decoder, copies read data straight into the caller's
/// pages and completes requests. All state is confined to the channel's event loop (hence
/// `@unchecked Sendable`); callers on other threads reach it through `eventLoop.execute`.
final class NBDChannelHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Pending {
        var info: NBDRequestInfo
        var buffers: [PageBuffer]
        var promise: EventLoopPromise<NBDCompletion>
        var covered: UInt64 = 0
        var error: NBDError?
        var completion = NBDCompletion()
        var timeout: Scheduled<Void>?
        /// Timed out: the caller has gone; a late reply is consumed and its data dropped.
        var abandoned = false
    }

    let eventLoop: any EventLoop
    private var context: ChannelHandlerContext?
    private var failure: NBDError?

    /// Completed when the TLS handshake under us finishes.
    var tlsHandshake: EventLoopPromise<Void>?

    // Handshake mode.
    private var handshakeBytes: ByteBuffer?
    private var waiter: (count: Int, promise: EventLoopPromise<[UInt8]>)?

    // Transmission mode.
    private var transmitting = false
    private var decoder = NBDReplyDecoder()
    private var extended = false
    private var inFlight: [UInt64: Pending] = [:]
    private var nextCookie: UInt64 = 1

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)  // var: the handshake path appends it
        guard failure == nil else { return }
        if !transmitting {
            if let pending = handshakeBytes, pending.readableBytes > 0 {
                // Joined in a buffer of our own sized to what is unread: appending to the kept one would copy
                // the event loop's whole receive buffer (shared with its pool) into fresh pages.
                var joined = context.channel.allocator.buffer(capacity: pending.readableBytes + bytes.readableBytes)
                joined.writeImmutableBuffer(pending)
                joined.writeBuffer(&bytes)
                handshakeBytes = joined
            } else {
                handshakeBytes = bytes
            }
            serveWaiter()
            return
        }
        decodeAll(bytes)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted? = event as? TLSUserEvent {
            tlsHandshake?.succeed()
            tlsHandshake = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(.disconnected)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let io = error as? IOError, io.errnoCode == ECONNRESET || io.errnoCode == EPIPE {
            // The server went away: the same as an orderly close for everyone waiting.
            fail(.disconnected)
            return
        }
        let text = String(describing: error)
        fail(String(reflecting: type(of: error)).contains("NIOSSL") ? .tlsFailed(text) : .io(text))
    }

    /// Ends the connection: every waiter and request in flight fails with `error`.
    func fail(_ error: NBDError) {
        eventLoop.preconditionInEventLoop()
        guard failure == nil else { return }
        failure = error
        if let waiter {
            self.waiter = nil
            waiter.promise.fail(error)
        }
        tlsHandshake?.fail(error)
        tlsHandshake = nil
        let pending = inFlight
        inFlight.removeAll()
        for (_, request) in pending {
            request.timeout?.cancel()
            if !request.abandoned { request.promise.fail(error) }
        }
        context?.close(promise: nil)
    }

    // MARK: - Handshake mode

    /// Reads exactly `count` bytes of the handshake.
    func read(_ count: Int) -> EventLoopFuture<[UInt8]> {
        eventLoop.flatSubmit { [self] in
            let promise = eventLoop.makePromise(of: [UInt8].self)
            if waiter != nil {
                promise.fail(NBDError.io("concurrent handshake reads"))
            } else if let available = handshakeBytes?.readableBytes, available >= count {
                // Bytes that arrived before the server hung up are still the server's answer: decode them
                // (a bad greeting must be reported as such, not as a closed connection).
                promise.succeed(handshakeBytes!.readBytes(length: count) ?? [])
            } else if let failure {
                promise.fail(failure)
            } else {
                waiter = (count, promise)
                serveWaiter()
            }
            return promise.futureResult
        }
    }

    /// Writes handshake bytes.
    func write(_ bytes: [UInt8]) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { [self] in
            guard let context, failure == nil else { return eventLoop.makeFailedFuture(failure ?? .disconnected) }
            return context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)))
        }
    }

    private func serveWaiter() {
        guard let (count, promise) = waiter, let available = handshakeBytes?.readableBytes, available >= count else {
            return
        }
        waiter = nil
        promise.succeed(handshakeBytes!.readBytes(length: count) ?? [])
    }

    /// True when no handshake bytes are buffered (safe to insert TLS below us).
    var handshakeBufferEmpty: Bool { (handshakeBytes?.readableBytes ?? 0) == 0 }

    /// Switches to the transmission phase with the negotiated reply format.
    func startTransmission(structured: Bool, extended: Bool) -> EventLoopFuture<Void> {
        eventLoop.submit { [self] in
            decoder = NBDReplyDecoder(structuredReplies: structured || extended, extendedHeaders: extended)
            self.extended = extended
            transmitting = true
            if let leftover = handshakeBytes, leftover.readableBytes > 0 {
                handshakeBytes = nil
                // The server spoke before we asked: feed it to the decoder, which will reject it.
                decodeAll(leftover)
            }
            handshakeBytes = nil
        }
    }

    /// Ends NIO's part of a plain connection after the handshake: returns a duplicate of `descriptor` and
    /// the bytes already read past the handshake, then closes the channel (which deregisters the socket and
    /// closes only its own descriptor). Bytes not yet read stay in the socket for the new owner.
    func detach(descriptor: Int32) -> EventLoopFuture<(descriptor: Int32, leftover: [UInt8])> {
        eventLoop.flatSubmit { [self] in
            if let failure { return eventLoop.makeFailedFuture(failure) }
            let leftover = handshakeBytes.map { Array($0.readableBytesView) } ?? []
            handshakeBytes = nil
            let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else {
                return eventLoop.makeFailedFuture(NBDError.io("dup: \(String(cString: strerror(errno)))"))
            }
            // From here on, NIO's end of the socket is not ours to report on.
            failure = .disconnected
            context?.close(promise: nil)
            return eventLoop.makeSucceededFuture((copy, leftover))
        }
    }

    // MARK: - Transmission mode

    /// Sends a request and completes when its last reply arrives. `payload` is the WRITE data, `buffers`
    /// receive READ data. Callable from any thread.
    func submit(
        command: NBDCommand, flags: NBDCommandFlags, offset: UInt64, length: UInt64,
        payload: [PageBuffer] = [], buffers: [PageBuffer] = [], timeout: TimeAmount? = nil
    ) -> EventLoopFuture<NBDCompletion> {
        let promise = eventLoop.makePromise(of: NBDCompletion.self)
        if eventLoop.inEventLoop {
            start(command, flags, offset, length, payload, buffers, timeout, promise)
        } else {
            eventLoop.execute { [self] in start(command, flags, offset, length, payload, buffers, timeout, promise) }
        }
        return promise.futureResult
    }

    private func start(
        _ command: NBDCommand, _ flags: NBDCommandFlags, _ offset: UInt64, _ length: UInt64,
        _ payload: [PageBuffer], _ buffers: [PageBuffer], _ timeout: TimeAmount?,
        _ promise: EventLoopPromise<NBDCompletion>
    ) {
        guard let context, failure == nil, transmitting else {
            promise.fail(failure ?? .disconnected)
            return
        }
        let cookie = nextCookie
        nextCookie &+= 1
        let request = NBDRequest(flags: flags, command: command, cookie: cookie, offset: offset, length: length)
        var out = context.channel.allocator.buffer(capacity: 32 + payload.reduce(0) { $0 + $1.count })
        out.writeBytes(request.encode(extended: extended))
        for piece in payload {
            out.writeBytes(UnsafeRawBufferPointer(start: piece.pointer, count: piece.count))
        }
        if command == .disconnect {
            // No reply comes: complete once written, then close our side.
            context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in
                promise.succeed(NBDCompletion())
                self.fail(.disconnected)
            }
            return
        }
        var pending = Pending(
            info: NBDRequestInfo(command: command, offset: offset, length: length), buffers: buffers, promise: promise)
        if let timeout {
            pending.timeout = eventLoop.scheduleTask(in: timeout) { [self] in expire(cookie, command) }
        }
        inFlight[cookie] = pending
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    private func expire(_ cookie: UInt64, _ command: NBDCommand) {
        guard var pending = inFlight[cookie], !pending.abandoned else { return }
        pending.abandoned = true
        pending.buffers = []
        inFlight[cookie] = pending
        pending.promise.fail(NBDError.timedOut(operation: "\(command) request"))
    }

    // MARK: - Replies

    private func decodeAll(_ bytes: ByteBuffer) {
        var caught: NBDProtocolError?
        bytes.withUnsafeReadableBytes { raw in
            do throws(NBDProtocolError) { try decode(raw) } catch { caught = error }
        }
        if let caught { fail(.protocolError(caught)) }
    }

    private func decode(_ raw: UnsafeRawBufferPointer) throws(NBDProtocolError) {
        var input = raw
        while true {
            let event = try decoder.next(&input) { cookie in inFlight[cookie]?.info }
            guard let event else { return }
            switch event {
            case .data(let cookie, let offset, let bytes):
                guard let pending = inFlight[cookie] else { throw .unknownCookie(cookie) }
                if !pending.abandoned {
                    Self.copy(bytes, into: pending.buffers, at: Int(offset - pending.info.offset))
                }
                inFlight[cookie]!.covered += UInt64(bytes.count)
            case .hole(let cookie, let offset, let length):
                guard let pending = inFlight[cookie] else { throw .unknownCookie(cookie) }
                if !pending.abandoned {
                    Self.zero(pending.buffers, at: Int(offset - pending.info.offset), count: Int(length))
                }
                inFlight[cookie]!.covered += length
            case .blockStatus(let cookie, let contextID, let extents):
                inFlight[cookie]?.completion.extents.append((contextID, extents))
            case .error(let cookie, let errno, let message, let offset):
                guard let pending = inFlight[cookie] else { throw .unknownCookie(cookie) }
                if pending.error == nil {
                    inFlight[cookie]!.error = .serverError(
                        command: pending.info.command, offset: offset ?? pending.info.offset, errno: errno,
                        message: message)
                }
            case .done(let cookie):
                guard let pending = inFlight.removeValue(forKey: cookie) else { throw .unknownCookie(cookie) }
                pending.timeout?.cancel()
                if pending.abandoned { continue }
                if let error = pending.error {
                    pending.promise.fail(error)
                } else if pending.info.command == .read, pending.covered != pending.info.length {
                    // Chunks must tile the request exactly; a short or overlapping answer is not data.
                    pending.promise.fail(
                        NBDError.protocolError(
                            .outsideRequest(cookie: cookie, offset: pending.info.offset, length: pending.covered)))
                } else {
                    pending.promise.succeed(pending.completion)
                }
            }
        }
    }

    /// Copies `bytes` into the concatenation of `buffers` starting at byte `position`.
    static func copy(_ bytes: UnsafeRawBufferPointer, into buffers: [PageBuffer], at position: Int) {
        var done = 0
        for piece in PageBuffer.slices(of: buffers, from: position, count: bytes.count) {
            piece.copy(from: UnsafeRawBufferPointer(rebasing: bytes[done..<done + piece.count]))
            done += piece.count
        }
    }

    /// Zeroes `count` bytes of the concatenation of `buffers` from `position`.
    static func zero(_ buffers: [PageBuffer], at position: Int, count: Int) {
        for piece in PageBuffer.slices(of: buffers, from: position, count: count) { piece.fill(0) }
    }
}
