import ConsoleBackend
import Foundation
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient
import XenStoreServer

/// Frontend and backend over the simulated hypervisor and the in-memory xenstored.
@Suite struct ConsoleBackendTests {
    // MARK: - Handshake and bytes

    @Test func extraConsoleHandshakeAndBytesBothWays() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let (frontend, session) = try await rig.connectExtraConsole(guest, devid: 1)
        let id = ConsoleID(domain: guest.id, device: .extra(1))
        let backendPath = try #require(id.backendPath(backend: .dom0))
        #expect(rig.read("\(backendPath)/state") == "4")
        #expect(rig.read("\(id.frontendPath)/state") == "4")
        #expect(frontend.isBackendConnected)

        try await frontend.write(Array("[    0.000000] Linux version 6.1\n".utf8))
        #expect(try await session.connection.read() == Array("[    0.000000] Linux version 6.1\n".utf8))
        try await session.write(Array("root\r".utf8))
        #expect(try await frontend.read() == Array("root\r".utf8))
        #expect(session.statistics == ConsoleStatistics(totalRead: 33, totalWrite: 5))

        await frontend.close()
        #expect(await session.closed() == .closed)
        await session.close()
        #expect(rig.read("\(backendPath)/state") == "6")
    }

    @Test func primaryConsoleKeepsEarlyBootOutput() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let frontend = try await rig.bootPrimaryConsole(guest)
        #expect(!frontend.isBackendConnected)
        // The guest prints before any backend exists: it stays in the ring.
        try await frontend.write(Array("early\n".utf8))
        let session = try await rig.backend(for: ConsoleID(domain: guest.id, device: .primary)).connect()
        #expect(frontend.isBackendConnected)
        #expect(try await session.connection.read() == Array("early\n".utf8))
        try await session.publishTTY("/dev/pts/42")
        #expect(rig.read("/local/domain/\(guest.id.rawValue)/console/tty") == "/dev/pts/42")
        await session.close()
        await frontend.close()
    }

    // MARK: - Volume

    @Test func sixteenMebibytesWithChecksumsBothWays() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let (frontend, session) = try await rig.connectExtraConsole(guest)
        let total = 16 << 20
        let output = Pattern.bytes(count: total, seed: 1)
        let input = Pattern.bytes(count: total / 4, seed: 2)
        var expectedOut = Pattern()
        expectedOut.add(output)
        var expectedIn = Pattern()
        expectedIn.add(input)

        async let guestPrints: Void = {
            var offset = 0
            while offset < total {
                let length = min(total - offset, 3001)
                try await frontend.write(output[offset..<offset + length])
                offset += length
            }
        }()
        async let backendTypes: Void = {
            var offset = 0
            while offset < input.count {
                let length = min(input.count - offset, 999)
                try await session.write(input[offset..<offset + length])
                offset += length
            }
        }()
        async let guestReads: Pattern = {
            var sum = Pattern()
            while sum.count < input.count { sum.add(try await frontend.read()) }
            return sum
        }()
        var receivedOut = Pattern()
        while receivedOut.count < total { receivedOut.add(try await session.connection.read()) }
        try await guestPrints
        try await backendTypes
        let receivedIn = try await guestReads
        #expect(receivedOut.count == total)
        #expect(receivedOut.sumA == expectedOut.sumA && receivedOut.sumB == expectedOut.sumB)
        #expect(receivedIn.count == input.count)
        #expect(receivedIn.sumA == expectedIn.sumA && receivedIn.sumB == expectedIn.sumB)
        await frontend.close()
        await session.close()
    }

    @Test func indicesNearUInt32MaxWrapThroughTheBackend() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let start = UInt32.max - 700
        let frontend = try await rig.bootPrimaryConsole(guest, startIndex: start)
        let session = try await rig.backend(for: ConsoleID(domain: guest.id, device: .primary)).connect()
        let data = Pattern.bytes(count: 300_000, seed: 9)
        async let written: Void = frontend.write(data)
        var received: [UInt8] = []
        while received.count < data.count { received += try await session.connection.read() }
        try await written
        #expect(received == data)
        let echo = Array(data.prefix(5000))
        async let typed: Void = session.write(echo)
        var echoed: [UInt8] = []
        while echoed.count < echo.count { echoed += try await frontend.read() }
        try await typed
        #expect(echoed == echo)
        let page = try #require(frontend.connection.page)
        #expect(page.uint32(at: ConsoleRingLayout.outProdOffset) == start &+ UInt32(data.count))
        #expect(page.uint32(at: ConsoleRingLayout.inProdOffset) == start &+ UInt32(echo.count))
        await session.close()
        await frontend.close()
    }

    // MARK: - Back-pressure

    @Test func stalledConsumerBlocksTheGuestInsteadOfDropping() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let (frontend, session) = try await rig.connectExtraConsole(guest)
        let data = Pattern.bytes(count: 50_000, seed: 4)
        let writer = Task { try await frontend.write(data) }
        // Nobody reads: the guest fills the ring and then waits.
        while frontend.connection.statistics.written < UInt64(ConsoleRingLayout.outSize) { await Task.yield() }
        for _ in 0..<100 { await Task.yield() }
        #expect(frontend.connection.statistics.written == UInt64(ConsoleRingLayout.outSize))
        // A slow sink (small reads, yielding) then gets every byte in order.
        let sink = RecordingSink(readSize: 100, yieldsBetweenReads: 3)
        let serving = Task { try await sink.serve(session.connection) }
        try await writer.value
        while sink.received.count < data.count { await Task.yield() }
        #expect(sink.received == data)
        await frontend.close()
        try await serving.value
        await session.close()
    }

    @Test func logFileSinkRecordsEverythingUntilTheGuestCloses() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let id = ConsoleID(domain: guest.id, device: .extra(2))
        try await ConsoleToolstack.createDevice(id, xenstore: rig.dom0)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("console-\(UUID()).log").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let backend = Task { try await rig.backend(for: id).run(sink: LogFileConsoleSink(path: path)) }
        let frontend = try await ConsoleFrontend.connect(
            domain: guest.id, devid: 2, xenstore: guest.xenstore, gntshr: guest.domain.openGntshr(),
            eventChannel: guest.domain.eventChannel)
        let lines = (0..<2000).map { "line \($0) of the guest's console log\n" }.joined()
        try await frontend.write(Array(lines.utf8))
        await frontend.close()
        let statistics = try await backend.value
        #expect(statistics.totalRead == UInt64(lines.utf8.count))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == lines)
    }

    // MARK: - Closing

    @Test func frontendClosingMidStreamLosesNothingItWrote() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let (frontend, session) = try await rig.connectExtraConsole(guest)
        let data = Pattern.bytes(count: 1 << 20, seed: 5)
        let writer = Task { () -> ConsoleError? in
            do throws(ConsoleError) {
                try await frontend.write(data)
                return nil
            } catch {
                return error
            }
        }
        var received: [UInt8] = []
        while received.count < 100_000 { received += try await session.connection.read() }
        await frontend.close()
        #expect(await writer.value == .closed)
        // The backend drains what was in the ring when the frontend left, then sees the end.
        while true {
            do throws(ConsoleError) {
                received += try await session.connection.read()
            } catch {
                #expect(error == .closed)
                break
            }
        }
        let written = Int(frontend.connection.statistics.written)
        #expect(received.count == written)
        #expect(received == Array(data.prefix(written)))
        await session.close()
        let id = ConsoleID(domain: guest.id, device: .extra(1))
        #expect(rig.read("\(id.frontendPath)/state") == "6")
        #expect(rig.read("\(try #require(id.backendPath(backend: .dom0)))/state") == "6")
    }

    @Test func destroyingTheGuestEndsTheConsole() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let (frontend, session) = try await rig.connectExtraConsole(guest)
        try await frontend.write(Array("last words\n".utf8))
        // The toolstack destroys the domain and removes its device nodes (the guest never said Closed).
        rig.hypervisor.destroyDomain(guest.id)
        try await ConsoleToolstack.destroyDevice(ConsoleID(domain: guest.id, device: .extra(1)), xenstore: rig.dom0)
        #expect(try await session.connection.read() == Array("last words\n".utf8))
        #expect(await session.closed() == .closed)
        await session.close()
    }

    // MARK: - Toolstack nodes

    @Test func toolstackNodesHaveTheRightOwners() async throws {
        let rig = ConsoleRig()
        let id = ConsoleID(domain: 7, device: .extra(3))
        try await ConsoleToolstack.createDevice(id, backend: .dom0, name: "serial", xenstore: rig.dom0)
        let backendPath = "/local/domain/0/backend/console/7/3"
        #expect(rig.read("\(backendPath)/frontend") == "/local/domain/7/device/console/3")
        #expect(rig.read("\(backendPath)/frontend-id") == "7")
        #expect(rig.read("/local/domain/7/device/console/3/backend") == backendPath)
        #expect(rig.read("/local/domain/7/device/console/3/name") == "serial")
        #expect(rig.server.permissions(at: "\(backendPath)/state")?.description == "n0,r7")
        #expect(rig.server.permissions(at: "/local/domain/7/device/console/3/state")?.description == "n7,r0")
        #expect(rig.server.permissions(at: "/local/domain/7/device/console/3/tty")?.description == "n0,r7")
        try await ConsoleToolstack.requestClose(id, xenstore: rig.dom0)
        #expect(rig.read("\(backendPath)/state") == "5")
        try await ConsoleToolstack.forceClose(id, xenstore: rig.dom0)
        #expect(rig.read("/local/domain/7/device/console/3/state") == "6")
        try await ConsoleToolstack.destroyDevice(id, xenstore: rig.dom0)
        #expect(rig.server.value(at: backendPath) == nil)
        #expect(rig.server.value(at: "/local/domain/7/device/console/3") == nil)
        try await ConsoleToolstack.destroyDevice(id, xenstore: rig.dom0)  // idempotent
    }

    @Test func badRingInfoIsATypedError() async throws {
        let rig = ConsoleRig()
        let guest = try await rig.makeGuest()
        let id = ConsoleID(domain: guest.id, device: .extra(1))
        try await ConsoleToolstack.createDevice(id, xenstore: rig.dom0)
        try await guest.xenstore.transaction { handle in
            try await handle.write("\(id.frontendPath)/ring-ref", "not-a-number")
            try await handle.write("\(id.frontendPath)/port", "5")
            try await handle.write("\(id.frontendPath)/state", "3")
        }
        await #expect(throws: ConsoleError.self) { _ = try await rig.backend(for: id).connect() }
        do throws(ConsoleError) {
            _ = try await rig.backend(for: id).connect()
        } catch {
            guard case .invalidValue(let path, "not-a-number") = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(path == "\(id.frontendPath)/ring-ref")
        }
    }
}

extension ConsoleError: Equatable {
    /// Test-only: compares the cases that carry no underlying error.
    public static func == (lhs: ConsoleError, rhs: ConsoleError) -> Bool {
        switch (lhs, rhs) {
        case (.closed, .closed), (.cancelled, .cancelled): true
        case (.protocolViolation(let a), .protocolViolation(let b)): a == b
        default: false
        }
    }
}
