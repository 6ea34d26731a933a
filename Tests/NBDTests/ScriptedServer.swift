import Foundation
import NBDProtocol
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// A tiny NBD server on a unix socket in a temp dir that follows a script: the test decides every byte
/// it sends, so it can lie (bad magic, unknown cookies, oversize or truncated replies, data outside the
/// request). One connection, served on its own thread with blocking I/O.
final class ScriptedServer: @unchecked Sendable {
    let path: String
    private let listener: Int32
    private let directory: String

    struct Connection {
        let fd: Int32

        func read(_ count: Int) -> [UInt8]? {
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            while done < count {
                let got = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + done, count - done) }
                if got <= 0 { return nil }
                done += got
            }
            return bytes
        }

        func write(_ bytes: [UInt8]) {
            var done = 0
            while done < bytes.count {
                let sent = bytes.withUnsafeBytes {
                    Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
                }
                if sent <= 0 { return }
                done += sent
            }
        }

        func optionReply(_ option: UInt32, type: UInt32, data: [UInt8] = []) {
            var writer = NBDWriter()
            writer.put(NBDMagic.optionReply)
            writer.put(option)
            writer.put(type)
            writer.put(UInt32(data.count))
            writer.put(bytes: data)
            write(writer.bytes)
        }

        /// Runs a fixed-newstyle handshake up to transmission. `go`: reply type to OPT_GO (1 = ACK with
        /// export info; otherwise that error and the client must fall back to EXPORT_NAME).
        func handshake(
            size: UInt64 = 1 << 20, flags: UInt16 = 0x0d, go: UInt32 = 1, structured: Bool = true,
            extended: Bool = false
        ) -> Bool {
            var greeting = NBDWriter()
            greeting.put(NBDMagic.initial)
            greeting.put(NBDMagic.option)
            greeting.put(UInt16(3))
            write(greeting.bytes)
            guard read(4) != nil else { return false }
            while true {
                guard let header = read(16) else { return false }
                var reader = NBDReader(header, what: "option")
                _ = try? reader.uint64()
                let option = (try? reader.uint32()) ?? 0
                let length = Int((try? reader.uint32()) ?? 0)
                guard let data = read(length) else { return false }
                switch option {
                case 1:  // EXPORT_NAME
                    var reply = NBDWriter()
                    reply.put(size)
                    reply.put(flags)
                    write(reply.bytes)
                    return true
                case 7:  // GO
                    if go != 1 {
                        optionReply(option, type: go)
                        continue
                    }
                    var info = NBDWriter()
                    info.put(UInt16(0))
                    info.put(size)
                    info.put(flags)
                    optionReply(option, type: 3, data: info.bytes)
                    optionReply(option, type: 1)
                    return true
                case 8: optionReply(option, type: structured ? 1 : 0x8000_0001)
                case 11: optionReply(option, type: extended ? 1 : 0x8000_0001)
                case 10:
                    if structured {
                        var meta = NBDWriter()
                        meta.put(UInt32(1))
                        meta.put(bytes: Array("base:allocation".utf8))
                        optionReply(option, type: 4, data: meta.bytes)
                    }
                    optionReply(option, type: 1)
                default:
                    _ = data
                    optionReply(option, type: 0x8000_0001)
                }
            }
        }

        /// Reads one request header (compact or extended); returns (command, cookie, offset, length).
        func request(extended: Bool = false) -> (command: UInt16, cookie: UInt64, offset: UInt64, length: UInt64)? {
            guard let bytes = read(extended ? 32 : 28) else { return nil }
            var reader = NBDReader(bytes, what: "request")
            _ = try? reader.uint32()
            _ = try? reader.uint16()
            let command = (try? reader.uint16()) ?? 0
            let cookie = (try? reader.uint64()) ?? 0
            let offset = (try? reader.uint64()) ?? 0
            let length = extended ? ((try? reader.uint64()) ?? 0) : UInt64((try? reader.uint32()) ?? 0)
            if command == 1 { _ = read(Int(length)) }
            return (command, cookie, offset, length)
        }
    }

    /// Listens and serves the first connection with `script` on a background thread.
    init(_ script: @escaping @Sendable (Connection) -> Void) throws {
        directory = NSTemporaryDirectory() + "nbdscript-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/s.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        guard try UnixSocketAddress(path: path).bind(listener) == 0, listen(listener, 4) == 0 else {
            throw NBDKitError.notListening
        }
        let thread = Thread {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            script(Connection(fd: fd))
            // Hold the socket open briefly so the client sees the bad bytes before EOF, then close.
            usleep(50_000)
            close(fd)
        }
        thread.start()
    }

    var uri: String { "nbd+unix:///?socket=\(path)" }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
