import BackendTelemetry
import CoreMetrics

/// The metrics of one vif (see `BackendTelemetry`), made once when it opens. `direction` is the
/// device's, as in `NetworkStatistics`: `rx` is what the backend received from the guest, `tx` what it sent
/// to the guest. The names, types and labels are listed in the BlockBack documentation's "Metrics" article.
///
/// OCaml: none (`Mirage_net.stats` is the record behind `NetBack.statistics`, which these mirror)
final class NetBackMetrics: Sendable {
    struct Direction: Sendable {
        let frames: Counter
        let bytes: Counter
        let errors: Counter
        /// rx: the guest's frames held back on its tx ring (nobody reading); tx: a writer waited for the guest's
        /// receive buffers.
        let backPressure: Counter

        init(_ telemetry: BackendTelemetry, _ name: String) {
            let label = [("direction", name)]
            frames = telemetry.counter("swiftxen_net_frames_total", label)
            bytes = telemetry.counter("swiftxen_net_bytes_total", label)
            errors = telemetry.counter("swiftxen_net_errors_total", label)
            backPressure = telemetry.counter("swiftxen_net_backpressure_total", label)
        }

        func frame(_ count: Int) {
            frames.increment()
            bytes.increment(by: count)
        }
    }

    let rx: Direction
    let tx: Direction
    /// Frames to the guest not sent on purpose (multicast it did not subscribe to, no connection).
    let txDropped: Counter
    let connections: Counter
    let peerDisconnects: Counter
    private let telemetry: BackendTelemetry

    init(_ telemetry: BackendTelemetry) {
        self.telemetry = telemetry
        rx = Direction(telemetry, "rx")
        tx = Direction(telemetry, "tx")
        txDropped = telemetry.counter("swiftxen_net_dropped_total", [("direction", "tx")])
        connections = telemetry.counter("swiftxen_net_connections_total")
        peerDisconnects = telemetry.counter("swiftxen_net_peer_disconnects_total")
    }

    /// The ring gauges of one queue, by the device's direction as in `NetworkStatistics`: tx, the guest's
    /// receive buffers banked and not yet filled; rx, the guest's transmit requests awaiting the rest of their
    /// frame.
    func ringGauges(queue: Int) -> (tx: Meter, rx: Meter) {
        (
            telemetry.meter("swiftxen_net_ring_slots_in_use", [("direction", "tx"), ("queue", String(queue))]),
            telemetry.meter("swiftxen_net_ring_slots_in_use", [("direction", "rx"), ("queue", String(queue))])
        )
    }
}
