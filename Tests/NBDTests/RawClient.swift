import Foundation
import NBDProtocol
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// A client that writes exactly the bytes a test gives it (so it can misbehave) and decodes replies with
/// the client's own decoder. Blocking I/O on a unix socket, with a receive timeout so a test never hangs.
final class RawClient: @unchecked Sendable {
    let fd: Int32
    private(set) var extended = false
    private var decoder = NBDReplyDecoder()
    private var requests: [UInt64: NBDRequestInfo] = [:]
    private var run: (cookie: UInt64, offset: UInt64, count: Int)?

    private func flush(_ events: inout [String]) {
        if let run { events.append("data \(run.cookie) \(run.offset) \(run.count)") }
        run = nil
    }

    init(socket path: String) throws {
        let address = try UnixSocketAddress(path: path)
        fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard address.connect(fd) == 0 else { throw NBDKitError.notListening }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// The same blocking exact reads and writes the scripted server uses.
    private var connection: ScriptedServer.Connection { ScriptedServer.Connection(fd: fd) }

    func send(_ bytes: [UInt8]) { connection.write(bytes) }

    /// Exactly `count` bytes, or nil if the server closed (or went silent for 10 s).
    func receive(_ count: Int) -> [UInt8]? { connection.read(count) }

    /// True once the server has closed the connection (reads end of stream).
    func isClosed() -> Bool {
        var byte: UInt8 = 0
        return Glibc.read(fd, &byte, 1) == 0
    }

    /// Reads one option reply: its type and data.
    func optionReply() -> (type: NBDOptionReplyType, data: [UInt8])? {
        guard let bytes = receive(20), let header = try? NBDOptionReplyHeader.decode(bytes) else { return nil }
        return (header.type, receive(Int(header.length)) ?? [])
    }

    /// Greeting, client flags, then the options asked for and GO on `export`.
    func handshake(export: String = "", structured: Bool = true, extended: Bool = false, allocation: Bool = true)
        -> Bool
    {
        guard receive(18) != nil else { return false }
        send([0, 0, 0, 3])
        if extended {
            send(NBDOptionRequest.encode(.extendedHeaders))
            guard case .ack? = optionReply()?.type else { return false }
        } else if structured {
            send(NBDOptionRequest.encode(.structuredReply))
            guard case .ack? = optionReply()?.type else { return false }
        }
        if allocation && (structured || extended) {
            send(
                NBDOptionRequest.encode(
                    .setMetaContext,
                    data: NBDOptionRequest.metaContextData(export: export, queries: ["base:allocation"])))
            while let reply = optionReply() { if case .ack = reply.type { break } }
        }
        send(NBDOptionRequest.encode(.go, data: NBDOptionRequest.goData(export: export, requests: [.blockSize])))
        while let reply = optionReply() {
            switch reply.type {
            case .ack:
                self.extended = extended
                decoder = NBDReplyDecoder(structuredReplies: structured || extended, extendedHeaders: extended)
                return true
            case .error: return false
            default: continue
            }
        }
        return false
    }

    /// Sends a request (and its payload) and remembers it for decoding its reply.
    func request(
        _ command: NBDCommand, flags: NBDCommandFlags = [], cookie: UInt64, offset: UInt64, length: UInt64,
        payload: [UInt8] = [], type: UInt16? = nil
    ) {
        requests[cookie] = NBDRequestInfo(command: command, offset: offset, length: length)
        let header = NBDRequestHeader(
            flags: flags, type: type ?? command.rawValue, cookie: cookie, offset: offset, length: length)
        send(header.encode(extended: extended) + payload)
    }

    /// Reads replies until `count` requests are done; returns the events in order (data as byte counts).
    func replies(_ count: Int) -> [String]? {
        var events: [String] = []
        var done = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var pending: [UInt8] = []
        while done < count {
            if pending.isEmpty {
                let got = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
                guard got > 0 else { return nil }
                pending = Array(buffer[0..<got])
            }
            var failed = false
            pending.withUnsafeBytes { raw in
                var input = raw
                do {
                    while let event = try decoder.next(&input, lookup: { self.requests[$0] }) {
                        if case .data(let cookie, let offset, let bytes) = event {
                            // Pieces of one data chunk arrive as separate events: report the chunk once.
                            if let run, run.cookie == cookie, run.offset + UInt64(run.count) == offset {
                                self.run!.count += bytes.count
                            } else {
                                flush(&events)
                                self.run = (cookie, offset, bytes.count)
                            }
                            continue
                        }
                        flush(&events)
                        switch event {
                        case .data: break
                        case .hole(let cookie, let offset, let length):
                            events.append("hole \(cookie) \(offset) \(length)")
                        case .blockStatus(let cookie, _, let extents):
                            events.append(
                                "status \(cookie) " + extents.map { "\($0.length):\($0.flags)" }.joined(separator: ","))
                        case .error(let cookie, let errno, _, _): events.append("error \(cookie) \(errno)")
                        case .done(let cookie):
                            events.append("done \(cookie)")
                            done += 1
                        }
                    }
                    pending = Array(input)
                } catch { failed = true }
            }
            if failed { return nil }
        }
        return events
    }
}
