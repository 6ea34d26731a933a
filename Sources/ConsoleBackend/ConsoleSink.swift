import NIOCore
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where a served console's bytes go (and, for interactive sinks, where its input comes from).
/// A sink pulls from the console only as fast as it can deliver, so a slow sink back-pressures the guest
/// instead of losing bytes.
///
/// OCaml: the `C : CONSOLE` argument of `Conback.Make`; xenconsoled's log/pty outputs
public protocol ConsoleSink: Sendable {
    /// The path to publish in the console's `tty` key (a pty's slave device), if any.
    var ttyPath: String? { get }

    /// Moves bytes between `console` and this sink until the console closes. Returns normally when it
    /// closes in order; throws the console's protocol violation or a sink failure.
    ///
    /// OCaml: `Conback.Make.service_thread`
    func serve(_ console: ConsoleConnection) async throws(ConsoleError)
}

extension ConsoleSink {
    /// Most sinks have no tty.
    public var ttyPath: String? { nil }
}

// MARK: - Log file

/// Appends everything the guest prints to a file (xenconsoled's `--log=guest` files). Input is not read.
/// Writes run on XenCore's `BlockingPool`, never on the cooperative pool (as calls that may block without bound
/// when the path is not a regular file: a FIFO whose reader stalls must not hold a thread short calls need).
///
/// OCaml: none (xenconsoled `create_domain_log`)
public struct LogFileConsoleSink: ConsoleSink {
    /// The file appended to (created 0644 if missing).
    public let path: String

    /// A sink appending to `path`.
    public init(path: String) { self.path = path }

    /// OCaml: none (xenconsoled `handle_ring_read` + `write_with_timestamp`)
    public func serve(_ console: ConsoleConnection) async throws(ConsoleError) {
        let path = self.path
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .sink(op: "open", path: path, errno: errno) }
        defer { close(fd) }
        var status = stat()
        let regular = fstat(fd, &status) == 0 && status.st_mode & S_IFMT == S_IFREG
        for try await chunk in console.bytes {
            let failed = await BlockingPool.shared.run(mayBlockIndefinitely: !regular) { writeAll(fd: fd, chunk) }
            if let failed { throw .sink(op: "write", path: path, errno: failed) }
        }
        if let failure = console.failure, case .protocolViolation = failure { throw failure }
    }
}

/// Writes every byte of `bytes` to a blocking fd; the errno on failure, nil on success.
func writeAll(fd: Int32, _ bytes: [UInt8]) -> Int32? {
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { raw -> Int in
            guard let base = raw.baseAddress else { return 0 }
            return write(fd, base + offset, raw.count - offset)
        }
        if written < 0 {
            if errno == EINTR { continue }
            return errno
        }
        offset += written
    }
    return nil
}

// MARK: - Pumping a channel

/// A chunk taken from the ring but not yet delivered; shared by the tasks of one sink.
final class PendingChunk: Sendable {
    let bytes = Mutex<[UInt8]>([])
}

/// Moves bytes both ways between `console` and one NIO channel (a socket client or a pty master) until
/// either ends. `pending` holds a chunk taken from the ring but not yet written: it survives the channel,
/// so the next client gets it and nothing is lost. Returns true when the console closed (stop serving),
/// false when the channel went away (serve the next one).
func pump(
    _ console: ConsoleConnection, over channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>,
    pending: PendingChunk
) async throws(ConsoleError) -> Bool {
    let outcome: Result<Bool, ConsoleError>
    do {
        outcome = try await channel.executeThenClose { inbound, outbound in
            await withTaskGroup(of: Result<Bool, ConsoleError>?.self) { group in
                group.addTask {
                    // Console → channel. The chunk leaves `pending` only once the channel accepted it.
                    while true {
                        var chunk = pending.bytes.withLock { $0 }
                        if chunk.isEmpty {
                            do throws(ConsoleError) {
                                chunk = try await console.read()
                            } catch {
                                if case .cancelled = error { return nil }
                                if case .closed = error { return .success(true) }
                                return .failure(error)
                            }
                            pending.bytes.withLock { $0 = chunk }
                        }
                        do {
                            try await outbound.write(ByteBuffer(bytes: chunk))
                        } catch {
                            return Task.isCancelled ? nil : .success(false)
                        }
                        pending.bytes.withLock { $0 = [] }
                    }
                }
                group.addTask {
                    // Channel → console (keyboard input to the guest).
                    do {
                        for try await buffer in inbound {
                            try await console.write(buffer.readableBytesView)
                        }
                    } catch let error as ConsoleError {
                        if case .cancelled = error { return nil }
                        if case .closed = error { return .success(true) }
                        return .failure(error)
                    } catch {
                        // The channel failed: treat as the client leaving.
                    }
                    return .success(false)
                }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first ?? .success(true)
            }
        }
    } catch {
        return false
    }
    return try outcome.get()
}
