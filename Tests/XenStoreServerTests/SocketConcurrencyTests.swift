import Foundation
import Testing
import XenCore
import XenStoreProtocol
import XenStoreServer

/// Many clients over the unix socket at once.
@Suite struct SocketConcurrencyTests {
    /// 32 clients, 10,000 operations in all (writes, reads, listings and read-modify-write transactions on a
    /// shared counter, retried on EAGAIN); the end state must be exactly what the clients did.
    @Test func thirtyTwoClientsTenThousandOps() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = XenStoreServer()
        let listener = try await server.listen(unixSocketPath: directory.socket)
        let clients = 32
        let operationsPerClient = 10_000 / clients + 1
        let results = Mutexed<[Int: ClientOutcome]>([:])

        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let group = DispatchGroup()
            for index in 0..<clients {
                group.enter()
                Thread.detachNewThread {
                    let outcome = Self.runClient(index, operations: operationsPerClient, socket: directory.socket)
                    results.withLock { $0[index] = outcome }
                    group.leave()
                }
            }
            group.notify(queue: .global()) { continuation.resume() }
        }

        let outcomes = results.withLock { $0 }
        #expect(outcomes.count == clients)
        var commits = 0
        for (index, outcome) in outcomes.sorted(by: { $0.key < $1.key }) {
            #expect(outcome.failures.isEmpty, "client \(index): \(outcome.failures.prefix(3))")
            commits += outcome.commits
            for (key, value) in outcome.expected {
                #expect(server.value(at: "/conc/c\(index)/\(key)") == Array(value.utf8), "client \(index) \(key)")
            }
            #expect(Set(server.children(of: "/conc/c\(index)") ?? []) == Set(outcome.expected.keys))
        }
        #expect(commits == clients * (operationsPerClient / 10))
        #expect(server.value(at: "/conc/counter") == Array(String(commits).utf8))
        #expect(server.check().isEmpty)
        await listener.close()
    }

    struct ClientOutcome: Sendable {
        var expected: [String: String] = [:]
        var commits = 0
        var failures: [String] = []
    }

    static func runClient(_ index: Int, operations: Int, socket: String) -> ClientOutcome {
        var outcome = ClientOutcome()
        do {
            let client = try SocketTestClient(path: socket)
            let home = "/conc/c\(index)"
            for step in 0..<operations {
                let key = "k\(step % 7)"
                switch step % 10 {
                case 0..<5:
                    let value = "\(index)-\(step)"
                    let reply = try client.call(.write(path: "\(home)/\(key)", value: Array(value.utf8)))
                    if reply != .ok(.write) { outcome.failures.append("write \(reply)") }
                    outcome.expected[key] = value
                case 5..<8:
                    let reply = try client.call(.read(path: "\(home)/\(key)"))
                    let wanted: XenStoreReply = outcome.expected[key].map { .read(Array($0.utf8)) } ?? .error(.enoent)
                    if reply != wanted { outcome.failures.append("read \(key): \(reply) != \(wanted)") }
                case 8:
                    let reply = try client.call(.directory(path: home))
                    if case .directory(let names) = reply, Set(names) == Set(outcome.expected.keys) {
                    } else if !(outcome.expected.isEmpty && reply == .error(.enoent)) {
                        outcome.failures.append("directory \(reply)")
                    }
                default:
                    try increment(client, home: home, &outcome)
                    outcome.expected["tx"] = String(outcome.commits)
                }
            }
        } catch {
            outcome.failures.append("\(error)")
        }
        return outcome
    }

    /// Read-modify-write of the shared counter in a transaction, retried until it commits.
    static func increment(_ client: SocketTestClient, home: String, _ outcome: inout ClientOutcome) throws {
        for _ in 0..<10_000 {
            guard case .transactionStarted(let tid) = try client.call(.transactionStart) else {
                throw SocketTestError.unexpected("TRANSACTION_START")
            }
            let current: Int
            switch try client.call(.read(path: "/conc/counter"), transaction: tid) {
            case .read(let bytes): current = Int(String(decoding: bytes, as: UTF8.self)) ?? -1_000_000
            case .error(.enoent): current = 0
            case let other: throw SocketTestError.unexpected("counter read \(other)")
            }
            _ = try client.call(.write(path: "/conc/counter", value: Array(String(current + 1).utf8)), transaction: tid)
            let mine = String(outcome.commits + 1)
            _ = try client.call(.write(path: "\(home)/tx", value: Array(mine.utf8)), transaction: tid)
            switch try client.call(.transactionEnd(commit: true), transaction: tid) {
            case .ok:
                outcome.commits += 1
                return
            case .error(.eagain): continue
            case let other: throw SocketTestError.unexpected("commit \(other)")
            }
        }
        throw SocketTestError.unexpected("transaction never committed")
    }
}

/// A lock-protected box for results written by several threads.
final class Mutexed<Value: Sendable>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}

/// Pipelining: many requests in one write, replies in order with their request ids.
@Suite struct SocketPipeliningTests {
    @Test func sixtyFourPipelinedReadsComeBackInOrder() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = XenStoreServer()
        let listener = try await server.listen(unixSocketPath: directory.socket)
        let client = try SocketTestClient(path: directory.socket)
        #expect(try client.call(.write(path: "/p/key", value: Array("value".utf8))) == .ok(.write))
        var batch: [UInt8] = []
        for requestID in 1000..<1064 {
            let path = requestID % 2 == 0 ? "/p/key" : "/p/missing"
            XenStoreRequest.read(path: path).packet(requestID: UInt32(requestID)).encode(into: &batch)
        }
        try client.send(batch)
        for requestID in 1000..<1064 {
            let packet = try #require(try client.receivePacket())
            #expect(packet.requestID == UInt32(requestID))
            let expected: XenStoreReply = requestID % 2 == 0 ? .read(Array("value".utf8)) : .error(.enoent)
            #expect(try XenStoreReply(decoding: packet) == expected)
        }
        await listener.close()
    }

    @Test func oversizePacketOnTheSocketClosesItAndOthersCarryOn() async throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let server = XenStoreServer()
        let listener = try await server.listen(unixSocketPath: directory.socket)
        let bad = try SocketTestClient(path: directory.socket)
        let good = try SocketTestClient(path: directory.socket)
        try bad.send(XenStoreHeader(type: .write, requestID: 1, transactionID: 0, length: 5000).bytes)
        #expect(try bad.receivePacket() == nil)
        #expect(try good.call(.write(path: "/fine", value: [])) == .ok(.write))
        await listener.close()
    }
}
