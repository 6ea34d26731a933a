import ConsoleBackend
import InMemoryLogging
import Logging
import MetricsTestKit
import Testing
import XenCore

/// ConsoleBack's swift-metrics series, read from a `TestMetrics` of the test's own (no global bootstrap).
@Suite struct ConsoleBackMetricsTests {
    static func backend(_ rig: ConsoleRig, _ id: ConsoleID, _ metrics: TestMetrics, _ logs: InMemoryLogHandler)
        -> ConsoleBack
    {
        var logger = Logger(label: "test", factory: { _ in logs })
        logger.logLevel = .debug
        return ConsoleBack(
            id: id, xenstore: rig.dom0, grantTable: rig.hypervisor.dom0.grantTable,
            eventChannel: rig.hypervisor.dom0.eventChannel, logger: logger, metricsFactory: metrics)
    }

    static func total(_ metrics: TestMetrics, _ id: ConsoleID, _ label: String, _ extra: [(String, String)] = [])
        throws -> Int64
    {
        let identity = [("backend", "console"), ("domain", String(id.domain.rawValue)), ("device", "0")]
        return try metrics.expectCounter(label, identity + extra).totalValue
    }

    /// Bytes both ways are counted; a guest that then claims more output than its ring holds is
    /// disconnected, and counted once.
    @Test func countsBytesAndAGuestBreakingTheRing() async throws {
        let rig = ConsoleRig()
        let metrics = TestMetrics()
        let logs = InMemoryLogHandler()
        let guest = try await rig.makeGuest()
        let frontend = try await rig.bootPrimaryConsole(guest)
        let id = ConsoleID(domain: guest.id, device: .primary)
        let session = try await Self.backend(rig, id, metrics, logs).connect()
        try await frontend.write(Array("login: ".utf8))
        #expect(try await session.connection.read() == Array("login: ".utf8))
        try await session.write(Array("root\r".utf8))
        #expect(try await frontend.read() == Array("root\r".utf8))
        #expect(try Self.total(metrics, id, "swiftxen_console_bytes_total", [("direction", "rx")]) == 7)
        #expect(try Self.total(metrics, id, "swiftxen_console_bytes_total", [("direction", "tx")]) == 5)
        #expect(try Self.total(metrics, id, "swiftxen_console_connections_total") == 1)

        try #require(frontend.connection.page).setUInt32(5000, at: ConsoleRingLayout.outProdOffset)
        try guest.domain.eventChannel.notify(frontend.localPort)
        await #expect(throws: ConsoleError.self) { _ = try await session.connection.read() }
        await session.close()
        await session.close()  // idempotent: counted once
        #expect(try Self.total(metrics, id, "swiftxen_console_peer_disconnects_total") == 1)
        let messages = logs.entries.filter { $0.metadata["xen.domain"] == "\(guest.id.rawValue)" }.map(\.message)
        #expect(messages.map(\.description).contains("console connected"))
        #expect(messages.map(\.description).contains("console closed"))
        #expect(logs.entries.count { $0.message.description.hasPrefix("guest broke the console ring") } == 1)
        await frontend.close()
    }
}
