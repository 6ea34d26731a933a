import Foundation
import Synchronization
import XenStoreProtocol

/// A stand-in for the Linux `/dev/xen/xenbus` device with a tiny xenstored behind it, faithful to what
/// `drivers/xen/xenbus/xenbus_dev_frontend.c` and `xenbus_xs.c` do with what user space writes:
///
/// - Each `write(2)` (one `SOCK_SEQPACKET` message here) is copied into the file's one partial-message buffer
///   at its fill level; a complete message is acted on and the buffer is reused for the next write.
/// - WATCH/UNWATCH are answered at once by the device itself ("OK", the caller's header), and a new watch
///   fires once.
/// - Any other request is queued for the xenbus thread as the kernel's `xenbus_dev_request_and_reply` does:
///   the 16-byte header is copied, its req_id swapped for the kernel's own (the caller's kept as
///   `caller_req_id`), but the body is only a pointer into that shared buffer. The xenbus thread sends the
///   request later, with whatever the buffer holds by then, and the reply gets `caller_req_id` back.
/// - The xenbus thread runs once the device has been idle for `threadDelay` (a later write arriving first
///   overwrites the buffer, as on a real dom0 whenever user space writes faster than the thread runs).
///
/// The xenstored behind it knows READ, WRITE and RM on a flat map and fires watch events on writes at or
/// below a watched path.
final class KernelXenbusStandIn: Sendable {
    private struct Queued {
        var header: [UInt8]
        var callerRequestID: UInt32
    }

    private struct State {
        var store: [String: String] = [:]
        var watches: [(path: String, token: String)] = []
        /// The most requests ever waiting for the xenbus thread at once.
        var maxQueued = 0
        /// Requests sent with a body other than the one written with their header.
        var aliased = 0
    }

    private let device: Int32
    private let threadDelay: Int32
    private let state = Mutex(State())
    private let finished = DispatchSemaphore(value: 0)

    /// Serves `device` (the device end of a `SOCK_SEQPACKET` pair) on a thread of its own until the client
    /// end closes.
    init(device: Int32, threadDelayMilliseconds: Int32 = 5) {
        self.device = device
        self.threadDelay = threadDelayMilliseconds
        let thread = Thread { [self] in
            self.run()
            self.finished.signal()
        }
        thread.start()
    }

    /// The most requests that ever waited for the xenbus thread at once (1 = never pipelined).
    var maxQueued: Int { state.withLock { $0.maxQueued } }

    /// How many requests left with another request's body.
    var aliased: Int { state.withLock { $0.aliased } }

    /// Waits until the client end has closed and the thread has stopped, then closes the device end.
    func waitUntilClosed() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                self.finished.wait()
                continuation.resume()
            }
        }
        close(device)
    }

    // MARK: - The device

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 16 + XenStoreLimits.payloadMax)
        var filled = 0
        var queued: [Queued] = []
        /// The bodies as written, to count aliasing (the kernel keeps no such copy).
        var written: [[UInt8]] = []
        var kernelRequestID: UInt32 = 0x4000_0000
        var message = [UInt8](repeating: 0, count: 2 * buffer.count)
        while true {
            var poller = pollfd(fd: device, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, queued.isEmpty ? -1 : threadDelay)
            if ready < 0 && errno == EINTR { continue }
            if ready == 0 {
                // The xenbus thread runs: every queued request leaves with the buffer's body as it is now.
                var replies: [UInt8] = []
                for (index, request) in queued.enumerated() {
                    let length = Int(word(request.header, 12))
                    let body = Array(buffer[16..<(16 + length)])
                    if body != written[index] { state.withLock { $0.aliased += 1 } }
                    replies += answer(header: request.header, body: body, requestID: request.callerRequestID)
                }
                queued = []
                written = []
                sendAll(replies)
                continue
            }
            let count = message.withUnsafeMutableBytes { recv(device, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return }
            // xenbus_file_write: refuse what does not fit, else append at the fill level.
            guard count <= buffer.count - filled else {
                filled = 0
                continue
            }
            buffer.replaceSubrange(filled..<(filled + count), with: message[0..<count])
            filled += count
            guard filled >= 16 else { continue }
            let length = Int(word(buffer, 12))
            guard 16 + length <= buffer.count else {
                filled = 0
                continue
            }
            guard filled >= 16 + length else { continue }
            filled = 0
            let type = XenStoreMessageType(rawValue: word(buffer, 0))
            let callerID = word(buffer, 4)
            if type == .watch || type == .unwatch {
                let strings = strings(Array(buffer[16..<(16 + length)]))
                if strings.count >= 2 {
                    state.withLock { state in
                        if type == .watch {
                            state.watches.append((strings[0], strings[1]))
                        } else {
                            state.watches.removeAll { $0.path == strings[0] && $0.token == strings[1] }
                        }
                    }
                }
                let reply = XenStorePacket(
                    type: type, requestID: callerID, transactionID: word(buffer, 8), payload: Array("OK".utf8) + [0])
                var bytes = reply.bytes
                if type == .watch && strings.count >= 2 {
                    // Registering fires the watch once (xenstored's initial event).
                    bytes += XenStorePacket(type: .watchEvent, payload: Array(buffer[16..<(16 + length)])).bytes
                }
                sendAll(bytes)
                continue
            }
            var header = Array(buffer[0..<16])
            put(&header, 4, kernelRequestID)
            kernelRequestID &+= 1
            queued.append(Queued(header: header, callerRequestID: callerID))
            written.append(Array(buffer[16..<(16 + length)]))
            state.withLock { $0.maxQueued = max($0.maxQueued, queued.count) }
        }
    }

    // MARK: - The xenstored behind it

    /// The reply (and any watch events) to one request, under the caller's req_id.
    private func answer(header: [UInt8], body: [UInt8], requestID: UInt32) -> [UInt8] {
        let type = XenStoreMessageType(rawValue: word(header, 0))
        let transaction = word(header, 8)
        let arguments = strings(body)
        func reply(_ replyType: XenStoreMessageType, _ payload: [UInt8]) -> [UInt8] {
            XenStorePacket(type: replyType, requestID: requestID, transactionID: transaction, payload: payload).bytes
        }
        func error(_ name: String) -> [UInt8] { reply(.error, Array(name.utf8) + [0]) }
        switch type {
        case .read:
            guard let path = arguments.first else { return error("EINVAL") }
            guard let value = state.withLock({ $0.store[path] }) else { return error("ENOENT") }
            return reply(.read, Array(value.utf8))
        case .write:
            guard let split = body.firstIndex(of: 0) else { return error("EINVAL") }
            let path = String(decoding: body[..<split], as: UTF8.self)
            let value = String(decoding: body[(split + 1)...], as: UTF8.self)
            let watchers = state.withLock { state in
                state.store[path] = value
                return state.watches.filter { path == $0.path || path.hasPrefix($0.path + "/") }
            }
            var bytes = reply(.write, Array("OK".utf8) + [0])
            for watcher in watchers {
                let payload = Array(path.utf8) + [0] + Array(watcher.token.utf8) + [0]
                bytes += XenStorePacket(type: .watchEvent, payload: payload).bytes
            }
            return bytes
        case .rm:
            guard let path = arguments.first else { return error("EINVAL") }
            state.withLock { state in
                for key in state.store.keys where key == path || key.hasPrefix(path + "/") { state.store[key] = nil }
            }
            return reply(.rm, Array("OK".utf8) + [0])
        default:
            return error("ENOSYS")
        }
    }

    // MARK: - Helpers

    /// Sends each packet of `bytes` as its own message (the client reads them as one stream either way).
    private func sendAll(_ bytes: [UInt8]) {
        var start = 0
        while start + 16 <= bytes.count {
            let end = start + 16 + Int(word(bytes, start + 12))
            _ = bytes[start..<end].withUnsafeBytes { send(device, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            start = end
        }
    }

    private func word(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
            | UInt32(bytes[offset + 3]) << 24
    }

    private func put(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for shift in 0..<4 { bytes[offset + shift] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(shift))) }
    }

    private func strings(_ body: [UInt8]) -> [String] {
        var body = body[...]
        if body.last == 0 { body = body.dropLast() }
        return body.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    }
}
