import InMemoryLogging
import Logging
import MetricsTestKit
import NetBack
import NetworkDevice
import Testing
import XenCore

/// NetBack's swift-metrics series, read from a `TestMetrics` of the test's own (given in the options: no
/// global bootstrap, nothing shared with suites running in parallel).
@Suite struct NetBackMetricsTests {
    /// A frontend that lies about its tx producer is disconnected and counted; the next one's frames are
    /// counted each way with their bytes; a frame written with no frontend connected is a tx drop.
    @Test func countsFramesBytesDropsAndAHostileFrontend() async throws {
        let harness = try NetHarness()
        let metrics = TestMetrics()
        let logs = InMemoryLogHandler()
        let (back, serving) = try await harness.startBackend {
            $0.metricsFactory = metrics
            $0.logger = Logger(label: "test", factory: { _ in logs })
            $0.logger.logLevel = .debug
        }
        let identity = [("backend", "vif"), ("domain", String(harness.frontDomain.id.rawValue)), ("device", "0")]
        let total = { (label: String, extra: [(String, String)]) in
            try metrics.expectCounter(label, identity + extra).totalValue
        }

        let hostile = try await ScriptedFrontend(harness)
        try await hostile.connect()
        try await waitUntil { back.negotiated != nil }
        try hostile.lieAboutTxProducer(1000)
        try await waitUntil { back.lastBreak != nil && back.negotiated == nil }
        #expect(try total("swiftxen_net_peer_disconnects_total", []) == 1)
        let broke = logs.entries.first { $0.message.description.hasPrefix("frontend broke the protocol") }
        #expect(broke?.metadata["xen.backend"] == "vif" && broke?.metadata["xen.device"] == "0")
        #expect(broke?.metadata["xen.domain"] == "\(harness.frontDomain.id.rawValue)")
        try await hostile.state(.closing)
        try await hostile.state(.closed)
        _ = try await harness.store.waitForState(of: harness.nodes.backendPath) { $0 == .closed }

        let front = try await harness.connectFront()
        try await waitUntil { back.negotiated != nil }
        try await NetLifecycleTests.exchange(front, back, seed: 11)  // 600 bytes in, 700 out
        #expect(try total("swiftxen_net_frames_total", [("direction", "rx")]) == 1)
        #expect(try total("swiftxen_net_bytes_total", [("direction", "rx")]) == 600)
        #expect(try total("swiftxen_net_frames_total", [("direction", "tx")]) == 1)
        #expect(try total("swiftxen_net_bytes_total", [("direction", "tx")]) == 700)
        #expect(try total("swiftxen_net_errors_total", [("direction", "rx")]) == 0)
        #expect(try total("swiftxen_net_connections_total", []) == 2)
        // The frontend keeps receive buffers posted: the backend holds them banked.
        let banked = try metrics.expectMeter(
            "swiftxen_net_ring_slots_in_use", identity + [("direction", "tx"), ("queue", "0")])
        #expect((banked.lastValue ?? 0) > 0)
        try await harness.tearDown(front, back, serving)
        #expect(banked.lastValue == 0)

        await #expect(throws: NetworkError.disconnected) {
            try await back.write(NetworkFrame(data: testFrame(size: 60, seed: 1, from: back.mac, to: front.mac)))
        }
        #expect(try total("swiftxen_net_dropped_total", [("direction", "tx")]) == 1)
        #expect(try total("swiftxen_net_peer_disconnects_total", []) == 1)
    }
}
