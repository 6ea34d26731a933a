import Synchronization
import Testing
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// The reactor: handlers called when their descriptor is ready, pausing, and the synchronous deregistration
/// the owners rely on before they close what a handler uses.
@Suite struct IOReactorTests {
    /// A pipe whose read end the test registers.
    final class Pipe: Sendable {
        let reader: Int32
        let writer: Int32

        init() {
            var ends: [Int32] = [-1, -1]
            precondition(pipe(&ends) == 0)
            _ = fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) | O_NONBLOCK)
            reader = ends[0]
            writer = ends[1]
        }

        func send(_ count: Int = 1) {
            let bytes = [UInt8](repeating: 7, count: count)
            _ = bytes.withUnsafeBytes { write(writer, $0.baseAddress, count) }
        }

        /// Reads what is there; the number of bytes.
        func drain() -> Int {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let got = buffer.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
            return max(0, got)
        }

        func closeBoth() {
            close(reader)
            close(writer)
        }
    }

    /// Waits up to 10 s for `condition`.
    static func eventually(_ condition: () -> Bool) async throws {
        for _ in 0..<10_000 where !condition() { try await Task.sleep(for: .milliseconds(1)) }
        #expect(condition())
    }

    @Test func aReadyDescriptorCallsItsHandlerOnTheReactorThread() async throws {
        let reactor = try IOReactor()
        defer { reactor.stop() }
        let pipe = Pipe()
        defer { pipe.closeBoth() }
        let received = Atomic<Int>(0)
        let registration = try reactor.register(pipe.reader, events: Int16(POLLIN)) { revents in
            if revents & Int16(POLLIN) != 0 { received.add(pipe.drain(), ordering: .relaxed) }
            return true
        }
        pipe.send(3)
        try await Self.eventually { received.load(ordering: .relaxed) == 3 }
        pipe.send(5)
        try await Self.eventually { received.load(ordering: .relaxed) == 8 }
        reactor.deregister(registration)
        #expect(reactor.registrationCount == 0)
    }

    @Test func deregisterWaitsForARunningHandlerAndItNeverRunsAgain() async throws {
        let reactor = try IOReactor()
        defer { reactor.stop() }
        let pipe = Pipe()
        defer { pipe.closeBoth() }
        let started = Atomic<Bool>(false)
        let running = Atomic<Bool>(false)
        let calls = Atomic<Int>(0)
        let registration = try reactor.register(pipe.reader, events: Int16(POLLIN)) { _ in
            running.store(true, ordering: .sequentiallyConsistent)
            started.store(true, ordering: .sequentiallyConsistent)
            usleep(100_000)  // a slow handler: deregister must wait for it
            _ = pipe.drain()
            calls.add(1, ordering: .relaxed)
            running.store(false, ordering: .sequentiallyConsistent)
            return true
        }
        pipe.send()
        // Usually while the handler sleeps (on a loaded machine perhaps after it: then there is nothing to wait for).
        try await Self.eventually { started.load(ordering: .sequentiallyConsistent) }
        reactor.deregister(registration)
        let stillRunning = running.load(ordering: .sequentiallyConsistent)
        #expect(!stillRunning)
        let after = calls.load(ordering: .relaxed)
        #expect(after == 1)
        pipe.send()
        try await Task.sleep(for: .milliseconds(100))
        #expect(calls.load(ordering: .relaxed) == after)
    }

    @Test func aHandlerThatSaysStopIsPausedUntilItsEventsAreSetAgain() async throws {
        let reactor = try IOReactor()
        defer { reactor.stop() }
        let pipe = Pipe()
        defer { pipe.closeBoth() }
        let calls = Atomic<Int>(0)
        // Never reads: a level-triggered descriptor would call it again at once, but it asks to pause.
        let registration = try reactor.register(pipe.reader, events: Int16(POLLIN)) { _ in
            calls.add(1, ordering: .relaxed)
            return false
        }
        pipe.send()
        try await Self.eventually { calls.load(ordering: .relaxed) == 1 }
        try await Task.sleep(for: .milliseconds(100))
        #expect(calls.load(ordering: .relaxed) == 1)
        reactor.setEvents(Int16(POLLIN), for: registration)
        try await Self.eventually { calls.load(ordering: .relaxed) == 2 }
        reactor.deregister(registration)
    }

    @Test func aDescriptorThatIsNotOpenIsPausedNotSpun() async throws {
        let reactor = try IOReactor()
        defer { reactor.stop() }
        let calls = Atomic<Int>(0)
        let nval = Atomic<Bool>(false)
        // A number no descriptor of this process has (as if its owner closed it without deregistering; a
        // closed number of our own could be reused at once by tests running beside this one).
        let registration = try reactor.register(1_000_000, events: Int16(POLLIN)) { revents in
            calls.add(1, ordering: .relaxed)
            if revents & Int16(POLLNVAL) != 0 { nval.store(true, ordering: .relaxed) }
            return true
        }
        try await Self.eventually { nval.load(ordering: .relaxed) }
        try await Task.sleep(for: .milliseconds(100))
        #expect(calls.load(ordering: .relaxed) == 1)
        reactor.deregister(registration)
    }

    @Test func aHandlerMayDeregisterItself() async throws {
        let reactor = try IOReactor()
        defer { reactor.stop() }
        let pipe = Pipe()
        defer { pipe.closeBoth() }
        let slot = Mutex<IOReactorRegistration?>(nil)
        let calls = Atomic<Int>(0)
        let registration = try reactor.register(pipe.reader, events: Int16(POLLIN)) { _ in
            calls.add(1, ordering: .relaxed)
            if let me = slot.withLock({ $0 }) { reactor.deregister(me) }
            return true
        }
        slot.withLock { $0 = registration }
        pipe.send()
        try await Self.eventually { reactor.registrationCount == 0 }
        try await Task.sleep(for: .milliseconds(50))
        #expect(calls.load(ordering: .relaxed) == 1)
    }
}
