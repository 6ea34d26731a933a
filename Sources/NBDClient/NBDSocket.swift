import Glibc
import NBDProtocol
import XenCore

/// Opens sockets ourselves rather than through NIO's bootstrap, so that after the handshake a plain
/// connection's descriptor can move to an ``NBDDirectConnection``. `getaddrinfo` and `connect` block, so
/// they run on XenCore's `BlockingPool` (as calls that may block without bound), never on the cooperative pool.
enum NBDSocket {
    /// Connects to `endpoint`; returns a connected, non-blocking, close-on-exec descriptor.
    static func connect(_ endpoint: NBDEndpoint, timeout: Duration?) async throws(NBDError) -> Int32 {
        // A unix socket whose listener has room connects at once: no thread needed for that.
        if case .unix(let path) = endpoint, let fd = connectUnixNow(path) { return fd }
        return try await BlockingPool.shared.run(mayBlockIndefinitely: true) {
            connectBlocking(endpoint, timeout: timeout)
        }.get()
    }

    /// One non-blocking connect to a unix socket: the descriptor if it connected at once, else nil (the
    /// caller takes the helper-thread path, which waits, retries and reports errors).
    private static func connectUnixNow(_ path: String) -> Int32? {
        guard let address = try? UnixSocketAddress(path: path) else { return nil }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        if address.connect(fd) == 0 { return fd }
        close(fd)
        return nil
    }

    // MARK: - Blocking part (helper thread)

    private static func connectBlocking(_ endpoint: NBDEndpoint, timeout: Duration?) -> Result<Int32, NBDError> {
        let deadline = timeout.map { Int64(MonotonicClock.nanoseconds()) + max(0, $0.nanoseconds) }
        func failure(_ code: Int32) -> NBDError {
            code == ETIMEDOUT
                ? .timedOut(operation: "connect to \(endpoint)")
                : .connectFailed(endpoint: endpoint.description, reason: String(cString: strerror(code)))
        }
        switch endpoint {
        case .unix(let path):
            guard let address = try? UnixSocketAddress(path: path) else {
                return .failure(.connectFailed(endpoint: endpoint.description, reason: "socket path too long"))
            }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return .failure(failure(errno)) }
            let code = address.withSockaddr { attempt(fd, $0, $1, deadline: deadline) }
            if code != 0 {
                close(fd)
                return .failure(failure(code))
            }
            return .success(fd)
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host, String(port), &hints, &list)
            guard status == 0, let list else {
                return .failure(
                    .connectFailed(endpoint: endpoint.description, reason: String(cString: gai_strerror(status))))
            }
            defer { freeaddrinfo(list) }
            var last: Int32 = ECONNREFUSED
            var entry: UnsafeMutablePointer<addrinfo>? = list
            while let info = entry {
                entry = info.pointee.ai_next
                guard let address = info.pointee.ai_addr else { continue }
                let fd = socket(
                    info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue),
                    info.pointee.ai_protocol)
                guard fd >= 0 else {
                    last = errno
                    continue
                }
                last = attempt(fd, address, info.pointee.ai_addrlen, deadline: deadline)
                if last == 0 {
                    var one: Int32 = 1
                    _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                    return .success(fd)
                }
                close(fd)
                if last == ETIMEDOUT { break }
            }
            return .failure(failure(last))
        }
    }

    /// A non-blocking `connect` waited for with `poll` until `deadline`; 0 or the errno. Leaves `fd`
    /// non-blocking.
    private static func attempt(
        _ fd: Int32, _ address: UnsafePointer<sockaddr>, _ length: socklen_t, deadline: Int64?
    ) -> Int32 {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        while true {
            if Glibc.connect(fd, address, length) == 0 { return 0 }
            switch errno {
            case EINTR: continue
            case EINPROGRESS: break
            case EAGAIN:
                // A unix socket whose listener's backlog is full: try again shortly, until the deadline.
                if let deadline, Int64(MonotonicClock.nanoseconds()) >= deadline { return ETIMEDOUT }
                usleep(1000)
                continue
            default: return errno
            }
            break
        }
        var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        while true {
            var wait: Int32 = -1
            if let deadline {
                let left = deadline - Int64(MonotonicClock.nanoseconds())
                if left <= 0 { return ETIMEDOUT }
                wait = Int32(clamping: (left + 999_999) / 1_000_000)
            }
            let ready = poll(&descriptor, 1, wait)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 { return errno }
            if ready == 0 { continue }
            var code: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &size) == 0 else { return errno }
            return code
        }
    }
}
