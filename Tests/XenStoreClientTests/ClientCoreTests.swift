import Testing
import XenStoreProtocol

@testable import XenStoreClient

/// The pure parts of the client: req_id allocation, reply routing, the wait path-set rule, the retry
/// policy's backoff, and libxenstore's choice of connection path.
@Suite struct ClientCoreTests {
    // MARK: - Multiplexer state

    @Test func requestIDsSkipZeroAndIDsStillInFlight() {
        var state = MultiplexerState()
        state.nextRequestID = UInt32.max
        guard case .queued(let first, let flush, _) = state.admit(.read, transaction: 0, payload: [0]) else {
            Issue.record("not queued")
            return
        }
        #expect(first == UInt32.max && flush)
        // Wraps past 0 (reserved: old xenbus devices acknowledge watches with it) to 1.
        guard case .queued(let second, let secondFlush, _) = state.admit(.read, transaction: 0, payload: [0]) else {
            Issue.record("not queued")
            return
        }
        #expect(second == 1 && !secondFlush)
        // An id still in flight is never handed out twice.
        state.nextRequestID = 1
        guard case .queued(let third, _, _) = state.admit(.read, transaction: 0, payload: [0]) else {
            Issue.record("not queued")
            return
        }
        #expect(third == 2)
        // Header and payload of all three are in the outbox, in order.
        var parser = XenStorePacketParser()
        parser.append(state.outbox)
        let ids = [try? parser.next(), try? parser.next(), try? parser.next()].map { $0??.requestID }
        #expect(ids == [UInt32.max, 1, 2])
    }

    @Test func repliesBeforeTheRequesterWaitsAreKept() {
        var state = MultiplexerState()
        guard case .queued(let id, _, let connection) = state.admit(.read, transaction: 0, payload: [0]) else {
            Issue.record("not queued")
            return
        }
        var out = MultiplexerState.Dispatch()
        let reply = XenStorePacket(type: .read, requestID: id, payload: Array("v".utf8))
        state.dispatch([reply], connection: connection, into: &out)
        #expect(out.replies.isEmpty && out.unknown.isEmpty)
        guard case .done(.success(let packet)) = state.pending[id]?.waiter else {
            Issue.record("reply not stored")
            return
        }
        #expect(packet == reply)
    }

    @Test func staleConnectionsAreIgnored() {
        var state = MultiplexerState()
        guard case .queued(let id, _, let connection) = state.admit(.read, transaction: 0, payload: [0]) else {
            Issue.record("not queued")
            return
        }
        state.connection += 1
        var out = MultiplexerState.Dispatch()
        state.dispatch([XenStorePacket(type: .read, requestID: id, payload: [])], connection: connection, into: &out)
        #expect(state.pending[id] != nil)
        #expect(state.connectionLost(connection, error: .disconnected) == nil)
        #expect(state.alive)
    }

    @Test func gatesWhileSuspendedAndFailsWhenClosedOrDead() {
        var state = MultiplexerState()
        state.phase = .suspended
        guard case .park = state.admit(.read, transaction: 0, payload: [0]) else {
            Issue.record("expected park")
            return
        }
        state.phase = .resuming
        guard case .queued = state.admit(.watch, transaction: 0, payload: [0], bypassGate: true) else {
            Issue.record("resume's own requests pass the gate")
            return
        }
        state.phase = .running
        state.alive = false
        guard case .fail(.disconnected) = state.admit(.read, transaction: 0, payload: [0]) else {
            Issue.record("expected disconnected")
            return
        }
    }

    // MARK: - wait's watch set

    @Test func watchSetFollowsTheLastRun() {
        var watched = WatchedPaths()
        var change = watched.adjust(to: ["/a", "/b", "/a"])
        #expect(change.add == ["/a", "/b"] && change.remove.isEmpty)
        for path in change.add { watched.insert(path) }
        change = watched.adjust(to: ["/b", "/c"])
        #expect(change.add == ["/c"] && change.remove == ["/a"])
        for path in change.add { watched.insert(path) }
        for path in change.remove { watched.remove(path) }
        #expect(watched.paths == ["/b", "/c"])
        change = watched.adjust(to: ["/c", "/b"])
        #expect(change.add.isEmpty && change.remove.isEmpty)
    }

    // MARK: - Retry policy

    @Test func argumentsWithANulAreRefusedBeforeTheyAreSent() throws {
        #expect(try WirePayload.checkedStrings(["/a", "", "tok"], path: "/a", op: .watch) == Array("/a\0\0tok\0".utf8))
        for strings in [["/a\0b"], ["/a", "to\0k"], ["\0"]] {
            #expect(throws: XenStoreError.self) { try WirePayload.checkedStrings(strings, path: "/a", op: .watch) }
        }
    }

    @Test func backoffIsJitteredAndCapped() {
        let policy = XenStoreRetryPolicy(
            maxAttempts: 10, initialBackoff: .microseconds(100), maxBackoff: .milliseconds(1))
        var generator = SystemRandomNumberGenerator()
        for attempt in 1...20 {
            let cap: Duration = min(.microseconds(100 * (1 << min(attempt - 1, 20))), .milliseconds(1))
            for _ in 0..<50 {
                let delay = policy.backoff(afterAttempt: attempt, using: &generator)
                #expect(delay >= .zero && delay <= cap)
            }
        }
        #expect(XenStoreRetryPolicy.noRetry.backoff(afterAttempt: 1, using: &generator) == .zero)
        #expect(XenStoreRetryPolicy(maxAttempts: 0, initialBackoff: .zero, maxBackoff: .zero).maxAttempts == 1)
    }

    // MARK: - Connection paths

    @Test func socketPathIsChosenAsLibxenstoreDoes() {
        #expect(UnixSocketTransport.defaultPath(environment: [:]) == "/var/run/xenstored/socket")
        #expect(UnixSocketTransport.defaultPath(environment: ["XENSTORED_RUNDIR": "/run/x"]) == "/run/x/socket")
        #expect(
            UnixSocketTransport.defaultPath(environment: ["XENSTORED_RUNDIR": "/run/x", "XENSTORED_PATH": "/p/s"])
                == "/p/s")
        #expect(XenbusDeviceTransport.defaultPath(environment: ["XENSTORED_PATH": "/dev/x"]) == "/dev/x")
        let device = XenbusDeviceTransport.defaultPath(environment: [:])
        #expect(device == "/dev/xen/xenbus" || device == "/proc/xen/xenbus")
    }

    @Test func connectingToNothingIsATypedError() async {
        await #expect(throws: XenStoreError.self) {
            _ = try await XenStoreClient.connect(socketPath: "/nonexistent/swiftxen/socket")
        }
        #expect(throws: XenStoreError.self) {
            _ = try XenStoreClient.openDefaultTransport(environment: ["XENSTORED_PATH": "/nonexistent/swiftxen/socket"])
        }
    }
}
