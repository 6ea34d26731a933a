import CXen
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

// MARK: - Unix socket

/// Serves a console on a unix socket: one client at a time gets the guest's output and types its input.
/// While no client is connected, output waits in the ring (back-pressure); a chunk in flight when a
/// client leaves goes to the next client.
///
/// OCaml: none (console.txt's `connection=socket` with `path`, as QEMU serves it)
public struct UnixSocketConsoleSink: ConsoleSink {
    /// The socket path (an existing socket file there is replaced).
    public let path: String

    /// A sink listening on `path`.
    public init(path: String) { self.path = path }

    /// OCaml: none
    public func serve(_ console: ConsoleConnection) async throws(ConsoleError) {
        let path = self.path
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { child in
                    child.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                    }
                }
        } catch {
            throw .sink(op: "bind", path: path, errno: (error as? IOError)?.errnoCode ?? EINVAL)
        }
        defer { unlink(path) }
        let pending = PendingChunk()
        let result: Result<Void, ConsoleError> = await withTaskGroup(of: Result<Void, ConsoleError>?.self) { group in
            group.addTask {
                // Stop accepting once the console has gone.
                let reason = await console.closed()
                if case .protocolViolation = reason { return .failure(reason) }
                return .success(())
            }
            group.addTask {
                do {
                    try await server.executeThenClose { clients in
                        for try await client in clients {
                            if try await pump(console, over: client, pending: pending) { return }
                        }
                    }
                } catch let error as ConsoleError {
                    if case .cancelled = error { return nil }
                    return .failure(error)
                } catch {
                    return nil
                }
                return .success(())
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? .success(())
        }
        try result.get()
    }
}

// MARK: - Pseudo-terminal

/// Serves a console on a fresh pseudo-terminal in raw mode, as xenconsoled does; ``ttyPath`` is the slave
/// device to publish in the `tty` key, which `xl console` / `swiftxen console attach` opens. The sink keeps
/// the slave open itself so the master never reads EIO between clients; output nobody reads waits in the
/// pty and then in the ring (back-pressure).
///
/// OCaml: none (xenconsoled `domain_create_tty`)
public final class PtyConsoleSink: ConsoleSink {
    /// The slave device path (e.g. `/dev/pts/3`).
    public let ttyPath: String?
    private let master: Mutex<Int32?>
    private let slave: Int32

    /// Opens a pty pair (posix_openpt, grantpt, unlockpt), puts it in raw mode and keeps the slave open.
    ///
    /// OCaml: none (xenconsoled `domain_create_tty`)
    public init() throws(ConsoleError) {
        let master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard master >= 0 else { throw .sink(op: "posix_openpt", path: "/dev/ptmx", errno: errno) }
        guard grantpt(master) == 0, unlockpt(master) == 0 else {
            let code = errno
            close(master)
            throw .sink(op: "unlockpt", path: "/dev/ptmx", errno: code)
        }
        var name = [CChar](repeating: 0, count: 128)
        guard ptsname_r(master, &name, name.count) == 0 else {
            let code = errno
            close(master)
            throw .sink(op: "ptsname", path: "/dev/ptmx", errno: code)
        }
        let path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard slave >= 0 else {
            let code = errno
            close(master)
            throw .sink(op: "open", path: path, errno: code)
        }
        var termios = termios()
        if tcgetattr(slave, &termios) == 0 {
            cfmakeraw(&termios)
            _ = tcsetattr(slave, TCSANOW, &termios)
        }
        self.ttyPath = path
        self.master = Mutex(master)
        self.slave = slave
    }

    deinit {
        if let fd = master.withLock({ $0 }) { close(fd) }
        close(slave)
    }

    /// Serves the console on the pty until the console closes. Can run once (the master fd is handed to NIO).
    ///
    /// OCaml: none (xenconsoled `handle_tty_read`/`handle_tty_write`)
    public func serve(_ console: ConsoleConnection) async throws(ConsoleError) {
        let path = ttyPath ?? "pty"
        guard
            let fd = master.withLock({ fd in
                defer { fd = nil }; return fd
            })
        else {
            throw .sink(op: "serve", path: path, errno: EBUSY)
        }
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .takingOwnershipOfDescriptor(inputOutput: fd) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            close(fd)
            throw .sink(op: "register", path: path, errno: (error as? IOError)?.errnoCode ?? EINVAL)
        }
        let pending = PendingChunk()
        let stopped = try await pump(console, over: channel, pending: pending)
        if !stopped, let failure = console.failure, case .protocolViolation = failure { throw failure }
    }
}
