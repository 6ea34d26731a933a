import BlockDevice
import NBDProtocol
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// One client connection, on a thread of its own (see ``NBDServer``): the handshake first, then the
/// transmission loop (`NBDServerConnection+Transmission`), which is also the task executor of the requests
/// it starts (`NBDServerConnection+Requests`).
final class NBDServerConnection: Sendable {
    struct State {
        /// Requests started and not yet answered.
        var requests = 0
        /// Bytes held by them (READ buffers, WRITE payloads).
        var bytes = 0
        /// The server is shutting down: stop reading, finish what is in flight, close.
        var closing = false
        /// The thread has let go of the socket: late replies are dropped.
        var ended = false
    }

    let server: NBDServer
    /// The accepted socket.
    let socket: Int32
    /// Wakes the thread out of `poll` (nil: no pipe could be had, and the connection is abandoned).
    let wakeup: WakeSignal?
    private let ended: @Sendable () -> Void
    let state = Mutex(State())
    let output = Mutex(SocketOutputQueue())
    /// The thread as the task executor of the requests it starts (nil: no wake-up pipe, and the connection is
    /// abandoned).
    let executor: IOThreadExecutor?

    init(descriptor: Int32, server: NBDServer, ended: @escaping @Sendable () -> Void) {
        self.server = server
        self.socket = descriptor
        self.ended = ended
        wakeup = try? WakeSignal()
        executor = wakeup.map { IOThreadExecutor(wake: $0) }
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
    }

    /// Starts the connection's thread (or gives up on the connection if none can be had).
    func start() {
        guard wakeup != nil, DetachedThread.spawn({ [self] in run() }) == 0 else {
            abandon()
            server.remove(self)
            return
        }
    }

    /// Closes a connection that is not served (over the limit, shutting down, no thread).
    func abandon() {
        close(socket)
        ended()
    }

    /// Requests in flight and the bytes they and the unsent replies hold.
    var load: (requests: Int, bytes: Int) {
        let queued = output.withLock { $0.queuedBytes }
        return state.withLock { ($0.requests, $0.bytes + queued) }
    }

    var onIOThread: Bool { executor?.isOnThread ?? false }

    /// Wakes the thread out of `poll`.
    func signal() { wakeup?.signal() }

    /// The wake-up pipe's entry in a `poll` set (the thread runs only with one).
    var wakeSlot: pollfd { wakeup?.pollEntry ?? pollfd(fd: -1, events: 0, revents: 0) }

    /// Asks the connection to finish what is in flight and close (server shutdown).
    func requestClose() {
        state.withLock { $0.closing = true }
        signal()
    }

    private func run() {
        executor?.attach()
        var tlsBridge: NBDTLSBridge?
        if let (session, descriptor, leftover, bridge) = handshake() {
            tlsBridge = bridge
            transmit(session, descriptor: descriptor, leftover: leftover)
            if descriptor != socket { close(descriptor) }
        }
        state.withLock { $0.ended = true }
        executor?.retire()
        if let tlsBridge {
            // NIO holds its own descriptor of the socket under TLS: it closes it after close_notify.
            tlsBridge.close()
        } else {
            _ = shutdown(socket, Int32(SHUT_RDWR))
        }
        close(socket)
        server.remove(self)
        ended()
    }

    // MARK: - Handshake

    /// Runs the option haggling; returns the session, the descriptor transmission runs on (the socket, or
    /// our end of the TLS socket pair), bytes already read past the handshake and the TLS bridge, if any.
    private func handshake() -> (NBDServerSession, Int32, [UInt8], NBDTLSBridge?)? {
        var machine = NBDServerHandshake(
            exports: server.descriptions, tlsMode: server.tlsContext == nil ? .off : server.options.tls?.mode ?? .off)
        machine.allowList = server.options.allowList
        machine.allowExtendedHeaders = server.options.extendedHeaders
        let deadline = server.options.handshakeTimeout.map { Int64(MonotonicClock.nanoseconds()) + $0.nanoseconds }
        var descriptor = socket
        var bridge: NBDTLSBridge?
        guard sendAll(descriptor, machine.greeting(), deadline: deadline) else { return nil }
        while let bytes = receive(descriptor, deadline: deadline) {
            for action in machine.receive(bytes) {
                switch action {
                case .send(let reply):
                    guard sendAll(descriptor, reply, deadline: deadline) else { return cleanup(descriptor) }
                case .startTLS:
                    guard let context = server.tlsContext,
                        let started = NBDTLSBridge.start(socket: socket, context: context)
                    else { return nil }
                    bridge = started
                    descriptor = started.plaintext
                    machine.tlsStarted()
                case .close:
                    return cleanup(descriptor)
                case .transmit(let session, let leftover):
                    return (session, descriptor, leftover, bridge)
                }
            }
        }
        return cleanup(descriptor)
    }

    private func cleanup(_ descriptor: Int32) -> (NBDServerSession, Int32, [UInt8], NBDTLSBridge?)? {
        if descriptor != socket { close(descriptor) }
        return nil
    }

    /// Sends all of `bytes`, waiting for the socket as needed, until the deadline or a shutdown request.
    private func sendAll(_ descriptor: Int32, _ bytes: [UInt8], deadline: Int64?) -> Bool {
        var done = 0
        while done < bytes.count {
            let sent = bytes.withUnsafeBytes {
                send(descriptor, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            }
            if sent > 0 {
                done += sent
                continue
            }
            guard sent < 0, errno == EAGAIN || errno == EINTR, wait(descriptor, POLLOUT, deadline: deadline) else {
                return false
            }
        }
        return true
    }

    /// The next bytes from the client; nil at end of stream, on errors, timeout or a shutdown request.
    private func receive(_ descriptor: Int32, deadline: Int64?) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress!, $0.count) }
            if got > 0 { return Array(bytes[0..<got]) }
            guard got < 0, errno == EAGAIN || errno == EINTR, wait(descriptor, POLLIN, deadline: deadline) else {
                return nil
            }
        }
    }

    /// Polls `descriptor` for `event` and the wake-up pipe; false on timeout, shutdown or error.
    private func wait(_ descriptor: Int32, _ event: Int32, deadline: Int64?) -> Bool {
        var fds = [
            pollfd(fd: descriptor, events: Int16(event), revents: 0), wakeSlot,
        ]
        while true {
            var timeout: Int32 = -1
            if let deadline {
                let left = deadline - Int64(MonotonicClock.nanoseconds())
                guard left > 0 else { return false }
                timeout = Int32(clamping: (left + 999_999) / 1_000_000)
            }
            let ready = poll(&fds, 2, timeout)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0, fds[1].revents == 0 else { return false }
            return !state.withLock { $0.closing }
        }
    }
}
