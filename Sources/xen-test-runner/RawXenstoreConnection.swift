import XenCore
import XenStoreProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A blocking wire-level connection to the real xenstored's unix socket, for replaying the conversation
/// table request by request (XenStoreClient would hide the raw replies). Watch events are kept aside.
/// Used from one thread only.
final class RawXenstoreConnection {
    private let fd: Int32
    private var parser = XenStorePacketParser()
    private var nextRequestID: UInt32 = 1
    private(set) var events: [XenStoreReply] = []

    init(path: String = "/var/run/xenstored/socket") throws {
        let address: UnixSocketAddress
        do { address = try UnixSocketAddress(path: path) } catch { throw CheckFailure("\(error)") }
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CheckFailure(errnoText("socket")) }
        guard address.connect(fd) == 0 else {
            let failure = CheckFailure(errnoText("connect \(path)"))
            close(fd)
            throw failure
        }
    }

    deinit { close(fd) }

    /// Sends `request` and returns its reply (watch events arriving meanwhile are queued).
    func call(_ request: XenStoreRequest, transaction: UInt32 = 0) throws -> XenStoreReply {
        let requestID = nextRequestID
        nextRequestID &+= 1
        // The transaction id goes in the header as given, even for types that ignore it (as the table's own
        // test client does): the daemon's answer to a stray tid is part of what is compared.
        let bytes = XenStorePacket(
            type: request.type, requestID: requestID, transactionID: transaction, payload: request.payload
        ).bytes
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw CheckFailure(errnoText("send")) }
            offset += sent
        }
        while true {
            guard let packet = try receive(milliseconds: 10_000) else {
                throw CheckFailure("no reply to \(request.type) within 10 s")
            }
            let reply = try XenStoreReply(decoding: packet)
            if case .watchEvent = reply {
                events.append(reply)
                continue
            }
            return reply
        }
    }

    /// The watch events received so far plus those arriving within `milliseconds` (waiting until `count`
    /// have arrived, or the time is up); clears the queue.
    func drainEvents(expecting count: Int, milliseconds: Int32) throws -> [XenStoreReply] {
        var remaining = milliseconds
        while events.count < count || remaining > 0 {
            let step: Int32 = 50
            guard let packet = try receive(milliseconds: step) else {
                remaining -= step
                if remaining <= 0 { break }
                continue
            }
            let reply = try XenStoreReply(decoding: packet)
            if case .watchEvent = reply { events.append(reply) }
            if events.count >= count && remaining <= 0 { break }
        }
        defer { events.removeAll() }
        return events
    }

    private func receive(milliseconds: Int32) throws -> XenStorePacket? {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let packet = try parser.next() { return packet }
            guard Files.waitReadable(fd, milliseconds: milliseconds) else { return nil }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { throw CheckFailure("xenstored closed the connection") }
            parser.append(chunk[0..<count])
        }
    }
}
