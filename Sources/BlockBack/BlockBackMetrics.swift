import BackendTelemetry
import BlkifProtocol
import CoreMetrics

/// The metrics of one vbd, made once per connection (see `BackendTelemetry`): every request answered, by
/// operation; the bytes moved; the requests answered with an error; the requests in flight; connections;
/// disconnects for a frontend that broke its ring. The names, types and labels are listed in the BlockBack
/// documentation's "Metrics" article.
///
/// A class: the queues share one object and read its counters in place, with no retain of each per request.
///
/// OCaml: none (mirage-block-xen keeps no statistics)
final class BlockBackMetrics: Sendable {
    /// The `op` label of a request.
    enum Operation: Int, CaseIterable {
        case read, write, flush, barrier, discard
        /// Not decodable (an unknown operation, a malformed segment).
        case invalid

        var label: String {
            switch self {
            case .read: "read"
            case .write: "write"
            case .flush: "flush"
            case .barrier: "barrier"
            case .discard: "discard"
            case .invalid: "invalid"
            }
        }

        init(_ request: BlkifRequest) {
            switch request {
            case .discard: self = .discard
            case .indirect(let indirect): self = indirect.operation == .write ? .write : .read
            case .direct(let direct):
                switch direct.operation {
                case .read: self = .read
                case .write: self = .write
                case .flushDiskCache: self = .flush
                case .writeBarrier: self = .barrier
                case .discard, .indirect, .reserved1: self = .invalid
                }
            }
        }
    }

    private let requests: [Counter]
    private let errors: [Counter]
    private let bytesRead: Counter
    private let bytesWritten: Counter
    /// Requests taken off the rings and not yet answered: each holds its ring slot until then.
    let inFlight: Meter
    let connections: Counter
    let peerDisconnects: Counter

    init(_ telemetry: BackendTelemetry) {
        requests = Operation.allCases.map { telemetry.counter("swiftxen_block_requests_total", [("op", $0.label)]) }
        errors = Operation.allCases.map { telemetry.counter("swiftxen_block_errors_total", [("op", $0.label)]) }
        bytesRead = telemetry.counter("swiftxen_block_bytes_total", [("op", Operation.read.label)])
        bytesWritten = telemetry.counter("swiftxen_block_bytes_total", [("op", Operation.write.label)])
        inFlight = telemetry.meter("swiftxen_block_requests_in_flight")
        connections = telemetry.counter("swiftxen_block_connections_total")
        peerDisconnects = telemetry.counter("swiftxen_block_peer_disconnects_total")
    }

    /// One request answered with `status`.
    func answered(_ operation: Operation, _ status: BlkifStatus) {
        requests[operation.rawValue].increment()
        if status != .okay { errors[operation.rawValue].increment() }
        inFlight.decrement()
    }

    /// `count` bytes moved between the device and the frontend's pages.
    func transferred(write: Bool, _ count: Int) {
        (write ? bytesWritten : bytesRead).increment(by: count)
    }
}
