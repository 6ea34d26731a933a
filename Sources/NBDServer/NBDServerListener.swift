public import NBDProtocol
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// A listening socket whose connections go to its ``NBDServer``. XenCore's shared `IOReactor` polls it and
/// accepts on its thread (the socket is non-blocking, so a connection gone before `accept` costs nothing);
/// ``stop()`` removes it from the reactor.
///
/// OCaml: none (`Nbd_lwt_unix` leaves listening to the application; `nbd-tool serve` has its own loop)
public final class NBDServerListener: Sendable {
    /// What it listens on (for TCP with the port actually bound).
    public let endpoint: NBDEndpoint
    private let descriptor: Int32
    private let server: NBDServer
    /// Whether it stopped, and its reactor registration while it listens.
    private let state = Mutex<(stopped: Bool, polled: (IOReactor, IOReactorRegistration)?)>((false, nil))
    /// The unix socket path to remove when the listener stops.
    private let socketPath: String?

    init(endpoint: NBDEndpoint, server: NBDServer) throws(NBDServerError) {
        (descriptor, self.endpoint) = try Self.bind(endpoint)
        self.server = server
        if case .unix(let path) = endpoint { socketPath = path } else { socketPath = nil }
    }

    deinit {
        close(descriptor)
    }

    func start() throws(NBDServerError) {
        let reactor: IOReactor
        do { reactor = try IOReactor.shared() } catch {
            throw .listen(
                endpoint: endpoint.description, reason: "cannot start the I/O reactor: \(Self.reason(error.errno))")
        }
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        // The registration holds the listener until `stop()` removes it.
        let registration: IOReactorRegistration
        do {
            registration = try reactor.register(descriptor, events: Int16(POLLIN)) { [self] revents in accept(revents) }
        } catch {
            throw .listen(
                endpoint: endpoint.description, reason: "cannot start the I/O reactor: \(Self.reason(error.errno))")
        }
        let stoppedMeanwhile = state.withLock { state in
            if !state.stopped { state.polled = (reactor, registration) }
            return state.stopped
        }
        if stoppedMeanwhile { reactor.deregister(registration) }
    }

    /// Stops accepting (connections already accepted carry on) and removes the unix socket file.
    ///
    /// OCaml: none
    public func stop() {
        let polled = state.withLock { state -> (IOReactor, IOReactorRegistration)?? in
            guard !state.stopped else { return nil }
            state.stopped = true
            defer { state.polled = nil }
            return .some(state.polled)
        }
        guard let polled else { return }
        if let (reactor, registration) = polled { reactor.deregister(registration) }
        if let socketPath { unlink(socketPath) }
    }

    /// One ready round of the listening socket, on the reactor's thread: accepts one connection (the reactor
    /// calls again while more wait) and hands it to the server. False stops polling (the socket failed).
    private func accept(_ revents: Int16) -> Bool {
        guard revents & Int16(POLLIN) != 0 else { return false }
        let client = Glibc.accept(descriptor, nil, nil)
        guard client >= 0 else {
            // EMFILE and the like: back off rather than spin (briefly: the reactor's other descriptors wait).
            if errno != EINTR && errno != EAGAIN && errno != ECONNABORTED { usleep(10_000) }
            return true
        }
        _ = fcntl(client, F_SETFD, FD_CLOEXEC)
        var one: Int32 = 1
        _ = setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        server.start(descriptor: client)
        return true
    }

    // MARK: - Binding

    private static func reason(_ code: Int32) -> String { String(cString: strerror(code)) }

    private static func bind(_ endpoint: NBDEndpoint) throws(NBDServerError) -> (Int32, NBDEndpoint) {
        func failure(_ code: Int32) -> NBDServerError { .listen(endpoint: endpoint.description, reason: reason(code)) }
        switch endpoint {
        case .unix(let path):
            guard let address = try? UnixSocketAddress(path: path) else {
                throw .listen(endpoint: endpoint.description, reason: "socket path too long")
            }
            // A socket file left by a previous server is replaced; any other file is not.
            var status = stat()
            if lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK { unlink(path) }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw failure(errno) }
            let code = address.bind(fd) == 0 && Glibc.listen(fd, 128) == 0 ? 0 : errno
            guard code == 0 else {
                close(fd)
                throw failure(code)
            }
            return (fd, endpoint)
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_family = AF_UNSPEC
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            hints.ai_flags = AI_PASSIVE
            var list: UnsafeMutablePointer<addrinfo>?
            let status = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &list)
            guard status == 0, let list, let info = Optional(list.pointee), let address = info.ai_addr else {
                throw .listen(endpoint: endpoint.description, reason: String(cString: gai_strerror(status)))
            }
            defer { freeaddrinfo(list) }
            let fd = socket(
                info.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), info.ai_protocol)
            guard fd >= 0 else { throw failure(errno) }
            var one: Int32 = 1
            _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            guard Glibc.bind(fd, address, info.ai_addrlen) == 0, Glibc.listen(fd, 128) == 0 else {
                let code = errno
                close(fd)
                throw failure(code)
            }
            var bound = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            _ = withUnsafeMutablePointer(to: &bound) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            }
            let family = bound.ss_family
            let boundPort = withUnsafePointer(to: &bound) { pointer -> UInt16 in
                if family == sa_family_t(AF_INET6) {
                    return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                        UInt16(bigEndian: $0.pointee.sin6_port)
                    }
                }
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    UInt16(bigEndian: $0.pointee.sin_port)
                }
            }
            return (fd, .tcp(host: host, port: Int(boundPort)))
        }
    }
}
