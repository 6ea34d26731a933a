import Foundation
import XenCore
import XenStoreProtocol

/// A blocking unix-socket wire client for the socket tests, one per thread (XenStoreClient is another
/// component). Watch events are collected on the side.
final class SocketTestClient {
    let fd: Int32
    private var parser = XenStorePacketParser()
    private var nextRequestID: UInt32 = 1
    var events: [XenStoreReply] = []

    init(path: String) throws {
        let address = try UnixSocketAddress(path: path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketTestError.system("socket", errno) }
        guard address.connect(fd) == 0 else {
            close(fd)
            throw SocketTestError.system("connect", errno)
        }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { throw SocketTestError.system("send", errno) }
            offset += written
        }
    }

    /// Next packet from the server; nil at end of stream.
    func receivePacket() throws -> XenStorePacket? {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let packet = try parser.next() { return packet }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return nil }
            guard count > 0 else { throw SocketTestError.system("recv", errno) }
            parser.append(chunk[0..<count])
        }
    }

    func call(_ request: XenStoreRequest, transaction: UInt32 = 0) throws -> XenStoreReply {
        let requestID = nextRequestID
        nextRequestID &+= 1
        try send(request.packet(requestID: requestID, transactionID: transaction).bytes)
        while true {
            guard let packet = try receivePacket() else { throw SocketTestError.closed }
            let reply = try XenStoreReply(decoding: packet)
            if case .watchEvent = reply {
                events.append(reply)
            } else if packet.requestID == requestID {
                return reply
            }
        }
    }
}

enum SocketTestError: Error {
    case system(String, Int32)
    case closed
    case unexpected(String)
}

/// A temporary directory for sockets, removed by `remove()`.
struct TemporaryDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "swiftxen-test-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    var socket: String { path + "/socket" }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
