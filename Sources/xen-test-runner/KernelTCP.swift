#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A listening TCP socket of the dom0 kernel on an address the checks gave an interface: dom0's end of a
/// guest's `nc` transfer. One connection per transfer, served on a thread of its own (blocking calls never sit
/// on the cooperative pool), every wait bounded by `poll`.
final class KernelTCP: Sendable {
    let descriptor: Int32
    let name: String

    /// What one connection carried: its bytes, and the seconds from the first byte to the end of the stream
    /// (receiving) or from the accept to the last byte handed to the kernel (sending).
    struct Transfer: Sendable, CustomStringConvertible {
        var bytes: Int
        var seconds: Double
        var megabytesPerSecond: Double { seconds > 0 ? Double(bytes) / 1_048_576 / seconds : 0 }
        var description: String {
            "\(bytes) B in \((seconds * 100).rounded() / 100) s = \((megabytesPerSecond * 100).rounded() / 100) MiB/s"
        }
    }

    /// Binds `address:port` and listens.
    init(address: UInt32, port: UInt16) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try require(fd >= 0, errnoText("socket"))
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var local = KernelUDP.socketAddress(address, port)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        name = "\(dotted(address)):\(port)"
        guard bound == 0, listen(fd, 1) == 0 else {
            let failure = CheckFailure(errnoText("bind/listen \(name)"))
            Glibc.close(fd)
            throw failure
        }
        descriptor = fd
    }

    /// Accepts one connection within `seconds` and writes everything it carries to `path`, until the peer ends
    /// the stream (or nothing arrives for `idle` seconds: a failure).
    func receive(into path: String, within seconds: Int32, idle: Int32 = 60) async throws -> Transfer {
        let name = name
        return try await connection(within: seconds, file: path, flags: O_WRONLY | O_CREAT | O_TRUNC) {
            connection, file in
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var total = 0
            var first: ContinuousClock.Instant?
            while true {
                guard Files.waitReadable(connection, milliseconds: idle * 1000) else {
                    return .failure(CheckFailure("\(name): nothing for \(idle)s after \(total) bytes"))
                }
                let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                if count < 0, errno == EINTR { continue }
                guard count >= 0 else { return .failure(CheckFailure(errnoText("\(name): recv after \(total) bytes"))) }
                if count == 0 { break }
                if first == nil { first = .now }
                let written = buffer.withUnsafeBytes { write(file, $0.baseAddress, count) }
                guard written == count else { return .failure(CheckFailure(errnoText("write \(path)"))) }
                total += count
            }
            let elapsed = first.map { ContinuousClock.now - $0 } ?? .zero
            return .success(Transfer(bytes: total, seconds: elapsed.inSeconds))
        }
    }

    /// Accepts one connection within `seconds`, sends all of `path` and closes the connection.
    func send(_ path: String, within seconds: Int32) async throws -> Transfer {
        let name = name
        return try await connection(within: seconds, file: path, flags: O_RDONLY) { connection, file in
            // A bounded send: a guest that stops reading fails the transfer instead of holding this thread.
            var limit = timeval(tv_sec: 60, tv_usec: 0)
            _ = setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            var total = 0
            let start = ContinuousClock.now
            while true {
                let count = buffer.withUnsafeMutableBytes { read(file, $0.baseAddress, $0.count) }
                guard count >= 0 else { return .failure(CheckFailure(errnoText("read \(path)"))) }
                if count == 0 { break }
                var offset = 0
                while offset < count {
                    let sent = buffer.withUnsafeBytes {
                        Glibc.send(connection, $0.baseAddress! + offset, count - offset, Int32(MSG_NOSIGNAL))
                    }
                    if sent < 0, errno == EINTR { continue }
                    guard sent > 0 else {
                        return .failure(CheckFailure(errnoText("\(name): send after \(total + offset) bytes")))
                    }
                    offset += sent
                }
                total += count
            }
            shutdown(connection, Int32(SHUT_WR))
            return .success(Transfer(bytes: total, seconds: (ContinuousClock.now - start).inSeconds))
        }
    }

    /// Closes the listening socket (no transfer may be running).
    func close() { Glibc.close(descriptor) }

    /// On a thread of its own: accepts one connection within `seconds`, opens `path` with `flags`, runs `body`
    /// with both descriptors, then closes them.
    private func connection(
        within seconds: Int32, file path: String, flags: Int32,
        _ body: @escaping @Sendable (_ connection: Int32, _ file: Int32) -> Result<Transfer, CheckFailure>
    ) async throws -> Transfer {
        let listener = descriptor
        let name = name
        return try await blocking { () -> Result<Transfer, CheckFailure> in
            let connection = Self.accept(listener, seconds: seconds)
            guard connection >= 0 else { return .failure(CheckFailure("no connection to \(name) within \(seconds)s")) }
            defer { Glibc.close(connection) }
            let file = open(path, flags | O_CLOEXEC, 0o600)
            guard file >= 0 else { return .failure(CheckFailure(errnoText("open \(path)"))) }
            defer { Glibc.close(file) }
            return body(connection, file)
        }.get()
    }

    private static func accept(_ listener: Int32, seconds: Int32) -> Int32 {
        guard Files.waitReadable(listener, milliseconds: seconds * 1000) else { return -1 }
        let connection = Glibc.accept(listener, nil, nil)
        if connection >= 0 { _ = fcntl(connection, F_SETFD, FD_CLOEXEC) }
        return connection
    }
}
