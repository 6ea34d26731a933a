import Glibc
import XenCore
public import XenStoreProtocol

/// A connection to xenstored's unix socket: non-blocking sends from the writer, one I/O thread that polls and
/// reads, no blocking call on the cooperative pool.
///
/// OCaml: `Xs_transport_unix` (`Xs_client_lwt` with the unix `IO`)
public final class UnixSocketTransport: XenStoreTransport {
    let stream: DescriptorStream

    private init(stream: DescriptorStream) {
        self.stream = stream
    }

    /// libxenstore's socket path: `XENSTORED_PATH`, else `XENSTORED_RUNDIR/socket`, else
    /// `/var/run/xenstored/socket`.
    ///
    /// OCaml: none (libxenstore `xs_daemon_socket`; ocaml-xenstore hard-codes the path)
    public static func defaultPath(environment: [String: String] = XenStoreEnvironment.current()) -> String {
        if let path = environment["XENSTORED_PATH"], !path.isEmpty { return path }
        let directory = environment["XENSTORED_RUNDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/var/run/xenstored"
        return directory + "/socket"
    }

    /// Connects to the socket at `path`.
    ///
    /// OCaml: `Xs_transport_unix.create`
    public static func connect(path: String) throws(XenStoreError) -> UnixSocketTransport {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw .connectionFailed(path: path, errno: errno) }
        guard let address = try? UnixSocketAddress(path: path) else {
            Glibc.close(descriptor)
            throw .connectionFailed(path: path, errno: ENAMETOOLONG)
        }
        guard address.connect(descriptor) == 0 else {
            let error = errno
            Glibc.close(descriptor)
            throw .connectionFailed(path: path, errno: error)
        }
        let flags = fcntl(descriptor, F_GETFL)
        _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
        do {
            let stream = try DescriptorStream(descriptor: descriptor, mode: .stream)
            try stream.start()
            return UnixSocketTransport(stream: stream)
        } catch {
            throw .connectionFailed(path: path, errno: error.errno)
        }
    }

    /// Sends `bytes` in order (a non-blocking send; what does not fit is finished by the I/O thread).
    ///
    /// OCaml: `Xs_transport_unix.write`
    public func write(_ bytes: [UInt8]) async throws {
        try await stream.write(bytes)
    }

    /// The next bytes received; nil at end of stream.
    ///
    /// OCaml: `Xs_transport_unix.read`
    public func read() async throws -> [UInt8]? {
        try await stream.read()
    }

    /// Shuts the socket down; a parked read returns nil.
    ///
    /// OCaml: `Xs_transport_unix.destroy`
    public func close() async {
        stream.close()
    }
}

/// The process environment as libxenstore reads it (`XENSTORED_PATH`, `XENSTORED_RUNDIR`).
///
/// OCaml: none
public enum XenStoreEnvironment {
    /// The variables that choose a xenstore connection, from the process environment.
    ///
    /// OCaml: none (libxenstore's `getenv` calls)
    public static func current() -> [String: String] {
        var result: [String: String] = [:]
        for name in ["XENSTORED_PATH", "XENSTORED_RUNDIR"] {
            if let value = getenv(name) { result[name] = String(cString: value) }
        }
        return result
    }
}

/// The errno inside a connection error, for reporting.
func connectionErrno(_ error: any Error) -> Int32 {
    switch error {
    case let error as XenStoreError:
        if case .connectionFailed(_, let errno) = error { return errno }
        return EIO
    case let error as DescriptorError: return error.errno
    default: return EIO
    }
}

// MARK: - Push delivery

/// A transport that can hand received bytes to the client right on its own I/O thread, saving the hop
/// through a reader task (one thread wake-up per reply batch).
protocol PushingTransport: XenStoreTransport {
    /// Starts delivering; false if this transport cannot (the client then reads with `read()`).
    func startPushing(_ pusher: DescriptorStream.Pusher) -> Bool
    /// The I/O thread as a task executor, if the transport has one.
    var ioExecutor: (any TaskExecutor)? { get }
}

extension UnixSocketTransport: PushingTransport {
    func startPushing(_ pusher: DescriptorStream.Pusher) -> Bool {
        stream.startPushing(pusher)
        return true
    }
    var ioExecutor: (any TaskExecutor)? { stream.executor }
}

extension XenbusDeviceTransport: PushingTransport {
    func startPushing(_ pusher: DescriptorStream.Pusher) -> Bool {
        stream.startPushing(pusher)
        return true
    }
    var ioExecutor: (any TaskExecutor)? { stream.executor }
}
