import Synchronization
import Testing
import XenStoreClient
import XenStoreProtocol

/// The client against a hand-driven fake server: hostile and odd replies give typed errors, never a crash or
/// a hang, and the multiplexer keeps working where the stream is still framed.
@Suite struct ScriptedServerTests {
    let server = ScriptedTransport()
    let client: XenStoreClient

    init() {
        client = XenStoreClient(transport: server)
    }

    private func read(_ path: String) -> Task<Result<String, XenStoreError>, Never> {
        Task {
            do throws(XenStoreError) {
                return .success(try await client.immediate { h throws(XenStoreError) in try await h.read(path) })
            } catch {
                return .failure(error)
            }
        }
    }

    @Test func repliesAreMatchedByRequestIDInAnyOrder() async throws {
        let a = read("/a")
        let first = try #require(await server.nextRequest())
        let b = read("/b")
        let second = try #require(await server.nextRequest())
        #expect(first.requestID != second.requestID)
        #expect(first.requestID != 0 && second.requestID != 0)
        let (forA, forB) = payloadStrings(first.payload) == ["/a"] ? (first, second) : (second, first)
        server.reply(to: forB, Array("bee".utf8))
        server.reply(to: forA, Array("ay".utf8))
        #expect(try await a.value.get() == "ay")
        #expect(try await b.value.get() == "bee")
    }

    @Test func unknownRequestIDIsDroppedAndTheConnectionLives() async throws {
        let a = read("/a")
        let request = try #require(await server.nextRequest())
        server.reply(to: request, requestID: request.requestID &+ 1000, Array("stray".utf8))
        server.reply(to: request, requestID: 0, Array("stray zero".utf8))
        server.reply(to: request, Array("right".utf8))
        #expect(try await a.value.get() == "right")
        // A second reply to an answered request is dropped as well.
        server.reply(to: request, Array("again".utf8))
        let b = read("/b")
        let next = try #require(await server.nextRequest())
        server.reply(to: next, Array("fine".utf8))
        #expect(try await b.value.get() == "fine")
    }

    @Test func wrongReplyTypeIsATypedError() async throws {
        let a = read("/a")
        let request = try #require(await server.nextRequest())
        server.reply(to: request, type: .write, Array("OK".utf8) + [0])
        #expect(await a.value == .failure(.unexpectedReply(path: "/a", op: .read, received: .write)))
    }

    @Test(arguments: [
        ("ENOENT", XenStoreError.noEntry(path: "/a", op: .read)),
        ("EAGAIN", .eagain(path: "/a", op: .read)),
        ("EINVAL", .invalid(path: "/a", op: .read)),
        ("EEXIST", .eexist(path: "/a", op: .read)),
        ("EACCES", .accessDenied(path: "/a", op: .read)),
        ("EPERM", .notPermitted(path: "/a", op: .read)),
        ("EQUOTA", .quota(path: "/a", op: .read)),
        ("ENOSPC", .quota(path: "/a", op: .read)),
        ("E2BIG", .tooBig(path: "/a", op: .read)),
        ("ENOSYS", .notSupported(path: "/a", op: .read)),
        ("EBUSY", .busy(path: "/a", op: .read)),
        ("EISCONN", .alreadyConnected(path: "/a", op: .read)),
        ("EIO", .unknown(name: "EIO", path: "/a", op: .read)),
        ("EWHATEVER", .unknown(name: "EWHATEVER", path: "/a", op: .read)),
    ])
    func errorRepliesMapToTypedErrors(name: String, expected: XenStoreError) async throws {
        let a = read("/a")
        let request = try #require(await server.nextRequest())
        server.error(request, name)
        #expect(await a.value == .failure(expected))
    }

    @Test func oversizeReplyBreaksTheConnectionWithATypedError() async throws {
        let a = read("/a")
        let request = try #require(await server.nextRequest())
        let header = XenStoreHeader(type: .read, requestID: request.requestID, transactionID: 0, length: 5000)
        var bytes: [UInt8] = []
        header.encode(into: &bytes)
        server.send(bytes)
        guard case .failure(.protocolViolation) = await a.value else {
            Issue.record("expected a protocol violation")
            return
        }
        #expect(await read("/b").value == .failure(.disconnected))
    }

    @Test func garbageBreaksTheConnectionWithATypedError() async throws {
        let a = read("/a")
        _ = try #require(await server.nextRequest())
        server.send([UInt8](repeating: 0xFF, count: 40))
        guard case .failure(.protocolViolation) = await a.value else {
            Issue.record("expected a protocol violation")
            return
        }
        #expect(await read("/b").value == .failure(.disconnected))
    }

    @Test func malformedPayloadsAreTypedErrors() async throws {
        let start = Task {
            try await client.transaction { h in try await h.write("/x", "1") }
        }
        let request = try #require(await server.nextRequest())
        #expect(request.type == .transactionStart)
        server.reply(to: request, Array("not-a-number".utf8) + [0])
        await #expect(
            throws: XenStoreError.malformedReply(
                path: "", op: .transactionStart, reason: "transaction id \"not-a-number\"")
        ) {
            try await start.value
        }
        let perms = Task {
            try await client.immediate { h throws(XenStoreError) in try await h.permissions(of: "/p") }
        }
        let permsRequest = try #require(await server.nextRequest())
        server.reply(to: permsRequest, nulStrings("q7"))
        do {
            _ = try await perms.value
            Issue.record("expected malformedReply")
        } catch let error as XenStoreError {
            guard case .malformedReply(path: "/p", op: .getPermissions, _) = error else {
                Issue.record("expected malformedReply, got \(error)")
                return
            }
        }
    }

    @Test func malformedWatchEventsAreDropped() async throws {
        let events = client.events(token: "tok")
        let watch = Task {
            try await client.immediate { h throws(XenStoreError) in try await h.watch("/w", token: "tok") }
        }
        let request = try #require(await server.nextRequest())
        server.ok(request)
        try await watch.value
        server.send(XenStorePacket(type: .watchEvent, payload: Array("no-token".utf8)))
        server.send(XenStorePacket(type: .watchEvent, payload: nulStrings("/w", "other-token")))
        server.send(XenStorePacket(type: .watchEvent, payload: nulStrings("/w/child", "tok")))
        var iterator = events.makeAsyncIterator()
        #expect(try await iterator.next() == XenStoreWatchEvent(path: "/w/child", token: "tok"))
    }

    @Test func watchAcknowledgedWithRequestIDZeroIsAccepted() async throws {
        let watch = Task {
            try await client.immediate { h throws(XenStoreError) in try await h.watch("/w", token: "t") }
        }
        let request = try #require(await server.nextRequest())
        #expect(request.type == .watch)
        // Older Linux xenbus devices synthesise the acknowledgement with req_id 0.
        server.reply(to: request, requestID: 0, Array("OK".utf8) + [0])
        try await watch.value
        let unwatch = Task {
            try await client.immediate { h throws(XenStoreError) in try await h.unwatch("/w", token: "t") }
        }
        let second = try #require(await server.nextRequest())
        server.reply(to: second, requestID: 0, Array("OK".utf8) + [0])
        try await unwatch.value
    }

    @Test func serverHangingUpFailsEverythingInFlight() async throws {
        let reads = (0..<10).map { read("/n\($0)") }
        for _ in 0..<10 { _ = await server.nextRequest() }
        server.hangUp()
        for task in reads { #expect(await task.value == .failure(.disconnected)) }
        #expect(await read("/later").value == .failure(.disconnected))
    }

    @Test func directoryTooBigFallsBackToPartsAndRestartsOnGenerationChange() async throws {
        let listing = Task { try await client.immediate { h throws(XenStoreError) in try await h.directory("/big") } }
        let first = try #require(await server.nextRequest())
        #expect(first.type == .directory)
        server.error(first, "E2BIG")
        // Part 1 at generation 7, then the generation changes: the client starts over from offset 0.
        let part1 = try #require(await server.nextRequest())
        #expect(part1.type == .directoryPart && payloadStrings(part1.payload) == ["/big", "0"])
        server.reply(to: part1, nulStrings("7", "a", "b"))
        let part2 = try #require(await server.nextRequest())
        #expect(payloadStrings(part2.payload) == ["/big", "4"])
        server.reply(to: part2, nulStrings("8", "c") + [0])
        let again1 = try #require(await server.nextRequest())
        #expect(payloadStrings(again1.payload) == ["/big", "0"])
        server.reply(to: again1, nulStrings("8", "a", "b"))
        let again2 = try #require(await server.nextRequest())
        #expect(payloadStrings(again2.payload) == ["/big", "4"])
        server.reply(to: again2, nulStrings("8", "c", "d") + [0])
        #expect(try await listing.value == ["a", "b", "c", "d"])
    }

    @Test func oversizeRequestsAreRefusedBeforeSending() async throws {
        let big = String(repeating: "v", count: 5000)
        await #expect(throws: XenStoreError.requestTooLarge(path: "/a", op: .write, length: 5003)) {
            try await client.immediate { h throws(XenStoreError) in try await h.write("/a", big) }
        }
        #expect(server.writeCount == 0)
    }

    @Test func restrictAnswersWithTheServersError() async throws {
        let restrict = Task { try await client.immediate { h throws(XenStoreError) in try await h.restrict(5) } }
        let request = try #require(await server.nextRequest())
        #expect(request.type.rawValue == 20)
        server.error(request, "ENOSYS")
        await #expect(throws: XenStoreError.notSupported(path: "", op: XenStoreMessageType(rawValue: 20))) {
            try await restrict.value
        }
    }

    // MARK: - Transactions

    struct Boom: Error {}

    @Test func transactionBodyThrowingSendsEndF() async throws {
        let transaction = Task {
            try await client.transaction { h in
                try await h.write("/x", "1")
                throw Boom()
            }
        }
        let start = try #require(await server.nextRequest())
        #expect(start.type == .transactionStart && start.transactionID == 0)
        server.reply(to: start, nulStrings("5"))
        let write = try #require(await server.nextRequest())
        #expect(write.type == .write && write.transactionID == 5)
        server.ok(write)
        let end = try #require(await server.nextRequest())
        #expect(end.type == .transactionEnd && end.transactionID == 5 && payloadStrings(end.payload) == ["F"])
        server.ok(end)
        await #expect(throws: Boom.self) { try await transaction.value }
    }

    @Test func conflictsAreRetriedThenReportedTyped() async throws {
        let policy = XenStoreRetryPolicy(
            maxAttempts: 3, initialBackoff: .microseconds(10), maxBackoff: .microseconds(100))
        let runs = RunCounter()
        let transaction = Task {
            try await client.transaction(retryPolicy: policy) { h in
                runs.increment()
                try await h.write("/x", "1")
            }
        }
        for attempt in 1...3 {
            let start = try #require(await server.nextRequest())
            server.reply(to: start, nulStrings(String(attempt + 10)))
            let write = try #require(await server.nextRequest())
            server.ok(write)
            let end = try #require(await server.nextRequest())
            #expect(end.transactionID == UInt32(attempt + 10) && payloadStrings(end.payload) == ["T"])
            server.error(end, "EAGAIN")
        }
        await #expect(throws: XenStoreError.transactionConflict(attempts: 3)) { try await transaction.value }
        #expect(runs.value == 3)
    }

    @Test func conflictThenSuccessReturnsTheLastRunsValue() async throws {
        let runs = RunCounter()
        let transaction = Task {
            try await client.transaction { h in
                runs.increment()
                return try await h.read("/x")
            }
        }
        for (attempt, value) in ["old", "new"].enumerated() {
            let start = try #require(await server.nextRequest())
            server.reply(to: start, nulStrings(String(attempt + 1)))
            let read = try #require(await server.nextRequest())
            server.reply(to: read, Array(value.utf8))
            let end = try #require(await server.nextRequest())
            if attempt == 0 { server.error(end, "EAGAIN") } else { server.ok(end) }
        }
        #expect(try await transaction.value == "new")
        #expect(runs.value == 2)
    }

    @Test func transactionStartRefusedForQuotaIsRetried() async throws {
        let transaction = Task { try await client.transaction { h in try await h.write("/q", "1") } }
        let refused = try #require(await server.nextRequest())
        #expect(refused.type == .transactionStart)
        server.error(refused, "EQUOTA")
        let start = try #require(await server.nextRequest())
        #expect(start.type == .transactionStart)
        server.reply(to: start, nulStrings("3"))
        server.ok(try #require(await server.nextRequest()))
        let end = try #require(await server.nextRequest())
        #expect(end.type == .transactionEnd && payloadStrings(end.payload) == ["T"])
        server.ok(end)
        try await transaction.value
    }

    // MARK: - Suspend and resume

    @Test func suspendDrainsParksAndResumeReregistersManualWatches() async throws {
        // A manual watch, registered before the suspend.
        let events = client.events(token: "manual")
        let watch = Task {
            try await client.immediate { h throws(XenStoreError) in try await h.watch("/m", token: "manual") }
        }
        server.ok(try #require(await server.nextRequest()))
        try await watch.value

        let inFlight = read("/before")
        let request = try #require(await server.nextRequest())
        let suspended = Task { await client.suspend() }
        server.reply(to: request, Array("done".utf8))
        #expect(try await inFlight.value.get() == "done")
        await suspended.value

        // Requests made while suspended are parked, not sent.
        let writesBefore = server.writeCount
        let parked = read("/parked")
        for _ in 0..<50 { await Task.yield() }
        #expect(server.writeCount == writesBefore)

        let resumed = Task { try await client.resume() }
        // Same connection (no reconnect opener): RESET_WATCHES, then the manual watch again, then the queue.
        let reset = try #require(await server.nextRequest())
        #expect(reset.type == .resetWatches)
        server.ok(reset)
        let rewatch = try #require(await server.nextRequest())
        #expect(rewatch.type == .watch && payloadStrings(rewatch.payload) == ["/m", "manual"])
        server.ok(rewatch)
        try await resumed.value
        let released = try #require(await server.nextRequest())
        #expect(payloadStrings(released.payload) == ["/parked"])
        server.reply(to: released, Array("later".utf8))
        #expect(try await parked.value.get() == "later")

        server.send(XenStorePacket(type: .watchEvent, payload: nulStrings("/m", "manual")))
        var iterator = events.makeAsyncIterator()
        #expect(try await iterator.next() == XenStoreWatchEvent(path: "/m", token: "manual"))
    }

    @Test func suspendCancelsWaitsWithATypedError() async throws {
        let waiting = Task {
            try await client.wait { h in
                _ = try await h.read("/cond")
                throw XenStoreError.again
            }
        }
        let read = try #require(await server.nextRequest())
        server.reply(to: read, Array("no".utf8))
        let watch = try #require(await server.nextRequest())
        #expect(watch.type == .watch)
        server.ok(watch)
        await client.suspend()
        await #expect(throws: XenStoreError.suspended) { try await waiting.value }
    }

    @Test func closeFailsParkedRequests() async throws {
        await client.suspend()
        let parked = read("/p")
        for _ in 0..<20 { await Task.yield() }
        await client.close()
        #expect(await parked.value == .failure(.disconnected))
    }
}

final class RunCounter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
