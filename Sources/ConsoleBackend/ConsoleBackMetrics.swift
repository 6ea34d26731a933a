import BackendTelemetry
import CoreMetrics

/// The metrics of one console (see `BackendTelemetry`), made once per ``ConsoleBack``: bytes each way (`rx`
/// what the guest printed, `tx` what was typed into it, as `ConsoleStatistics` counts them), connections,
/// and disconnects for a guest that broke the ring protocol. Listed in the BlockBack documentation's
/// "Metrics" article.
///
/// OCaml: none (`Conback.stats` is the record these mirror)
final class ConsoleBackMetrics: Sendable {
    let bytesReceived: Counter
    let bytesSent: Counter
    let connections: Counter
    let peerDisconnects: Counter

    init(_ telemetry: BackendTelemetry) {
        bytesReceived = telemetry.counter("swiftxen_console_bytes_total", [("direction", "rx")])
        bytesSent = telemetry.counter("swiftxen_console_bytes_total", [("direction", "tx")])
        connections = telemetry.counter("swiftxen_console_connections_total")
        peerDisconnects = telemetry.counter("swiftxen_console_peer_disconnects_total")
    }
}
