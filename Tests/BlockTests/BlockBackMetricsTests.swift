import BlkifProtocol
import BlockBack
import BlockDevice
import InMemoryLogging
import Logging
import MetricsTestKit
import SharedRing
import Testing
import XenCore

/// BlockBack's swift-metrics series, read from a `TestMetrics` of each test's own (passed in the options, so
/// suites running in parallel never share a metrics backend and nothing bootstraps the global one).
@Suite struct BlockBackMetricsTests {
    /// The backend's options, counting into `metrics` and logging (everything) into `logs`.
    static func options(
        _ harness: BlockHarness, _ metrics: TestMetrics, logs: InMemoryLogHandler = InMemoryLogHandler()
    ) -> BlockBackOptions {
        var options = BlockBackOptions(domain: harness.backDomain.id)
        options.metricsFactory = metrics
        options.logger = Logger(label: "test", factory: { _ in logs })
        options.logger.logLevel = .debug
        return options
    }

    /// Whether `logs` holds `message` with the vbd's identity as metadata.
    static func logged(_ logs: InMemoryLogHandler, _ message: String, _ harness: BlockHarness) -> Bool {
        logs.entries.contains { entry in
            entry.message.description == message && entry.metadata["xen.backend"] == "vbd"
                && entry.metadata["xen.domain"] == "\(harness.frontDomain.id.rawValue)"
                && entry.metadata["xen.device"] == "51712"
                && entry.metadata["xen.path"] == "\(harness.nodes.backendPath)"
        }
    }

    /// The total of the vbd's counter `label` (its exact series: every dimension given, or the test fails).
    static func total(
        _ metrics: TestMetrics, _ harness: BlockHarness, _ label: String, _ extra: [(String, String)] = []
    ) throws -> Int64 {
        try metrics.expectCounter(label, dimensions(harness) + extra).totalValue
    }

    static func dimensions(_ harness: BlockHarness) -> [(String, String)] {
        [("backend", "vbd"), ("domain", String(harness.frontDomain.id.rawValue)), ("device", "51712")]
    }

    /// A frontend's reads, writes, flush and discard are counted by operation, with their bytes; a read the
    /// device fails is an error; nothing is left in flight once it disconnected.
    @Test func countsRequestsBytesAndErrors() async throws {
        let harness = try BlockHarness()
        let metrics = TestMetrics()
        let logs = InMemoryLogHandler()
        let device = MemoryBlockDevice(sizeSectors: 2048)
        let serving = try await harness.startBackend(device, options: Self.options(harness, metrics, logs: logs))
        let front = try await harness.connectFront()
        let buffer = PageBuffer(pages: 2)
        try await front.write(at: 0, from: [buffer])
        try await front.read(at: 0, into: [buffer])
        try await front.read(at: 64, into: [buffer.slice(from: 0, count: 4096)])
        try await front.discard(at: 128, count: 8)
        try await front.flush()
        // The disk goes away under the backend: the next read is answered with an error.
        await device.disconnect()
        await #expect(throws: BlockError.self) { try await front.read(at: 0, into: [buffer]) }
        await front.disconnect()
        try await serving.value

        let count = { (label: String, op: String) in try Self.total(metrics, harness, label, [("op", op)]) }
        #expect(try count("swiftxen_block_requests_total", "read") == 3)
        #expect(try count("swiftxen_block_requests_total", "write") == 1)
        #expect(try count("swiftxen_block_requests_total", "discard") == 1)
        #expect(try count("swiftxen_block_requests_total", "flush") == 1)
        #expect(try count("swiftxen_block_bytes_total", "read") == 8192 + 4096)
        #expect(try count("swiftxen_block_bytes_total", "write") == 8192)
        #expect(try count("swiftxen_block_errors_total", "read") == 1)
        #expect(try count("swiftxen_block_errors_total", "flush") == 0)
        #expect(try Self.total(metrics, harness, "swiftxen_block_connections_total") == 1)
        #expect(try Self.total(metrics, harness, "swiftxen_block_peer_disconnects_total") == 0)
        let inFlight = try metrics.expectMeter("swiftxen_block_requests_in_flight", Self.dimensions(harness))
        #expect(inFlight.lastValue == 0)
        #expect(inFlight.values.max() ?? 0 >= 1)
        #expect(Self.logged(logs, "vbd connected", harness) && Self.logged(logs, "vbd closed", harness))
    }

    /// Requests the device holds are in flight (each keeps its ring slot) until answered.
    @Test func requestsInFlightWhileTheDeviceHoldsThem() async throws {
        let harness = try BlockHarness()
        let metrics = TestMetrics()
        let device = GatedDevice(MemoryBlockDevice(sizeSectors: 1024))
        let serving = try await harness.startBackend(device, options: Self.options(harness, metrics))
        let front = try await harness.connectFront()
        let reads = (0..<3).map { index in
            Task { try await front.read(at: UInt64(index * 8), into: [PageBuffer(pages: 1)]) }
        }
        await device.waitForArrivals(3)
        let inFlight = try metrics.expectMeter("swiftxen_block_requests_in_flight", Self.dimensions(harness))
        #expect(inFlight.lastValue == 3)
        device.open()
        for read in reads { try await read.value }
        #expect(inFlight.lastValue == 0)
        await front.disconnect()
        try await serving.value
    }

    /// A frontend that corrupts its request index is disconnected, and counted once.
    @Test func hostileFrontendDisconnectIsCounted() async throws {
        let harness = try BlockHarness()
        let metrics = TestMetrics()
        let logs = InMemoryLogHandler()
        let serving = try await harness.startBackend(
            MemoryBlockDevice(sizeSectors: 64), options: Self.options(harness, metrics, logs: logs))
        let nodes = harness.nodes
        _ = try await harness.store.waitForState(of: nodes.backendPath) { $0 == .initWait }
        // A one-page ring published by hand, then a request producer 1000 ahead of the consumer.
        let grants = harness.frontDomain.grantTable
        let events = harness.frontDomain.eventChannel
        let page = PageBuffer(pages: 1)
        _ = try FrontRing(
            initialising: page, geometry: try SharedRingGeometry(entrySize: Blkif.ringEntrySize, pages: 1))
        let ref = try await grants.refs.get()
        try grants.grantAccess(ref, to: harness.backDomain.id, writable: true, page: page)
        let port = try events.bindUnboundPort(remote: harness.backDomain.id)
        try await harness.store.write([
            (nodes.frontendPath + "/ring-ref", String(ref.rawValue)),
            (nodes.frontendPath + "/event-channel", String(port.rawValue)),
            (nodes.frontendPath + "/state", XenbusState.initialised.xenstoreValue),
        ])
        _ = try await harness.store.waitForState(of: nodes.backendPath) { $0 == .connected }
        page.setUInt32(1000, at: 0)
        try events.notify(port)
        await #expect(throws: BlockBackError.self) { try await serving.value }
        #expect(try Self.total(metrics, harness, "swiftxen_block_peer_disconnects_total") == 1)
        #expect(try Self.total(metrics, harness, "swiftxen_block_connections_total") == 1)
        #expect(Self.logged(logs, "frontend broke its ring: disconnecting", harness))
        #expect(Self.logged(logs, "vbd stopped", harness))
        #expect(logs.entries.allSatisfy { $0.level == .debug })
        try events.unbind(port)
    }
}
