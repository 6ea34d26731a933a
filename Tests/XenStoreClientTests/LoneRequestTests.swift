import Foundation
import Testing
import XenCore
import XenStoreProtocol

@testable import XenStoreClient

/// Requests sent one at a time over a socket, where the client keeps its I/O thread and the requester awake
/// for a bounded while after traffic: replies that come later than that, or never, are still handled.
@Suite struct LoneRequestTests {
    @Test func spinPolicyFollowsLoneReplies() {
        let gauge = InFlightGauge()
        #expect(!gauge.wantsSpin)
        for _ in 0..<3 { gauge.dispatching(pending: 1) }
        #expect(gauge.wantsSpin)
        gauge.count.store(2, ordering: .relaxed)
        #expect(!gauge.wantsSpin)
        gauge.count.store(1, ordering: .relaxed)
        gauge.dispatching(pending: 5)
        #expect(!gauge.wantsSpin)
        for _ in 0..<3 { gauge.dispatching(pending: 1) }
        #expect(gauge.wantsSpin)
        // A reply was handed to another requester whose task has not run yet: its thread is wanted.
        gauge.waking(1)
        #expect(!gauge.wantsSpin)
        gauge.ran()
        #expect(gauge.wantsSpin)
    }

    /// Only the task that sent the previous request waits for its reply (so that 64 tasks on one thread do not
    /// run one at a time), and a task whose replies keep being caught yields now and then.
    @Test func onlyASequentialRequesterWaitsAndItYieldsNowAndThen() async {
        let gauge = InFlightGauge()
        gauge.backoff.lateYield.store(.max, ordering: .relaxed)  // a loaded test host must not turn waiting off
        for _ in 0..<3 { gauge.dispatching(pending: 1) }
        gauge.count.store(1, ordering: .relaxed)
        gauge.readerThread.store(1, ordering: .relaxed)  // replies come from another thread
        let waits = await Task {
            let first = (gauge.awaitLoneReply(since: 0), gauge.awaitLoneReply(since: 0))
            // Another task (this one still alive, so it has another identity) sends in between.
            let other = await Task { gauge.awaitLoneReply(since: 0) }.value
            return [first.0, first.1, other, gauge.awaitLoneReply(since: 0), gauge.awaitLoneReply(since: 0)]
        }.value
        #expect(waits == [false, true, false, false, true])
        gauge.readerThread.store(0, ordering: .relaxed)  // an in-process transport: nobody to wait for
        let noReader = await Task { (gauge.awaitLoneReply(since: 0), gauge.awaitLoneReply(since: 0)) }.value
        #expect(noReader == (false, false))
        let yields = (1...(3 * InFlightGauge.yieldEvery)).filter { _ in gauge.yieldDue() }.count
        #expect(yields == 3)
    }

    /// A yield in the wait that comes back late (here: every yield) shows a busy neighbour on the core: the
    /// requester stops waiting, and does not wait again until the back-off is over.
    @Test func aLateYieldTurnsLoneReplyWaitsOff() async {
        let gauge = InFlightGauge()
        gauge.backoff.lateYield.store(0, ordering: .relaxed)
        for _ in 0..<3 { gauge.dispatching(pending: 1) }
        gauge.count.store(1, ordering: .relaxed)
        gauge.readerThread.store(1, ordering: .relaxed)
        let (waits, backedOff) = await Task { () -> ([Bool], Bool) in
            var waits = [
                gauge.awaitLoneReply(since: 0), gauge.awaitLoneReply(since: 0), gauge.awaitLoneReply(since: 0),
            ]
            let backedOff = gauge.backoff.isBackingOff()
            gauge.backoff.end()  // the back-off is over
            gauge.backoff.lateYield.store(.max, ordering: .relaxed)
            waits.append(gauge.awaitLoneReply(since: 0))
            return (waits, backedOff)
        }.value
        // The first call only learns who asks; the second waits, finds its yield late and backs off; the
        // third does not wait; once the back-off is over, the requester waits again.
        #expect(waits == [false, true, false, true])
        #expect(backedOff)
    }

    @Test func lateReplyAfterManyQuickOnesArrivesAndHangUpFailsTyped() async throws {
        let server = try SlowSocketServer(quickReplies: 40, lateDelay: 0.02)
        defer { server.stop() }
        let client = try await XenStoreClient.connect(socketPath: server.path)
        for index in 0..<40 {
            let value = try await client.immediate { h throws(XenStoreError) in try await h.read("/k") }
            #expect(value == "v\(index)")
        }
        let late = try await client.immediate { h throws(XenStoreError) in try await h.read("/k") }
        #expect(late == "late")
        await #expect(throws: XenStoreError.disconnected) {
            try await client.immediate { h throws(XenStoreError) in try await h.read("/k") }
        }
        await client.close()
    }
}

/// A one-connection xenstore stand-in on a unix socket, run on its own thread with blocking calls: it
/// answers the first `quickReplies` READs at once, the next one after `lateDelay` seconds, then hangs up
/// when the request after that arrives.
final class SlowSocketServer: @unchecked Sendable {
    let path: String
    private let directory: String
    private let listener: Int32

    init(quickReplies: Int, lateDelay: TimeInterval) throws {
        directory = NSTemporaryDirectory() + "swiftxen-lone-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/socket"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        self.listener = listener
        guard try UnixSocketAddress(path: path).bind(listener) == 0, listen(listener, 1) == 0 else {
            let code = errno
            close(listener)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
        Thread.detachNewThread {
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            defer { close(connection) }
            var answered = 0
            while let request = Self.readPacket(connection) {
                if answered == quickReplies + 1 { return }
                let value = answered < quickReplies ? "v\(answered)" : "late"
                if answered == quickReplies { Thread.sleep(forTimeInterval: lateDelay) }
                let reply = XenStorePacket(type: request.type, requestID: request.requestID, payload: Array(value.utf8))
                guard Self.writeAll(connection, reply.bytes) else { return }
                answered += 1
            }
        }
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func readExactly(_ descriptor: Int32, _ count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + done, count - done) }
            guard got > 0 else { return nil }
            done += got
        }
        return bytes
    }

    private static func readPacket(_ descriptor: Int32) -> XenStorePacket? {
        guard let header = readExactly(descriptor, 16) else { return nil }
        func word(_ at: Int) -> UInt32 {
            (0..<4).reduce(0) { $0 | UInt32(header[at + $1]) << (8 * UInt32($1)) }
        }
        guard let payload = readExactly(descriptor, Int(word(12))) else { return nil }
        return XenStorePacket(
            type: XenStoreMessageType(rawValue: word(0)), requestID: word(4), transactionID: word(8),
            payload: payload)
    }

    private static func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let sent = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress! + done, bytes.count - done) }
            guard sent > 0 else { return false }
            done += sent
        }
        return true
    }
}
