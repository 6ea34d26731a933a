public import CoreMetrics
public import Logging
public import XenCore

/// What a backend advertises. Every feature is on by default; tests switch them off one by one.
///
/// OCaml: `Blkback.run ?max_indirect_segments` (mirage advertises only indirect segments)
public struct BlockBackOptions: Sendable {
    /// This (the backend's) domain.
    public var domain: DomainID
    /// `feature-flush-cache`.
    public var flush = true
    /// `feature-barrier`.
    public var barrier = true
    /// `feature-discard` (offered only when the device implements discard).
    public var discard = true
    /// `feature-persistent`.
    public var persistentGrants = true
    /// `feature-max-indirect-segments` (0: no indirect requests; at most 4096).
    public var maxIndirectSegments = 256
    /// `max-ring-page-order`.
    public var maxRingPageOrder = 4
    /// `multi-queue-max-queues`.
    public var maxQueues = 4
    /// Most persistent grants kept mapped per queue (Linux: 1056); beyond it grants are mapped per request.
    public var maxPersistentGrantsPerQueue = 1056
    /// Where the device logs (at `debug`: connect, disconnect, why it stopped), with its identity as metadata
    /// (`xen.backend` = `vbd`, `xen.domain`, `xen.device`). Nothing is logged above `debug`: the frontend is
    /// hostile and must not be able to flood the driver domain's log; its misdeeds are counted in the metrics.
    ///
    /// OCaml: none (mirage logs through `Logs` sources)
    public var logger = Logger(label: "swiftxen.blockback")
    /// Where the device's metrics go (listed in the "Metrics" article); nil: `MetricsSystem.factory`, the
    /// backend bootstrapped when the device connects (NOOP if none).
    ///
    /// OCaml: none (mirage-block-xen exports no metrics)
    public var metricsFactory: (any MetricsFactory)?

    /// All features on.
    public init(domain: DomainID) { self.domain = domain }
}

/// Why serving a vbd stopped early.
///
/// OCaml: `Blkback.run` fails with `Failure` (no context)
public enum BlockBackError: Error, Sendable, CustomStringConvertible {
    /// A xenstore operation failed at `path`; `underlying` is the xenstore seam's own error (`XenStoreError`
    /// through `XenStoreBus`).
    case xenstore(path: String, underlying: any Error)
    /// The frontend wrote a missing or malformed key (`underlying`: a `BlkifKeyError`, or the xenstore error
    /// reading it).
    case badKey(path: String, underlying: any Error)
    /// Mapping the rings or binding the event channels failed. `underlying`: the grant table's or event
    /// channel's error, when one caused it.
    case resources(String, underlying: (any Error)? = nil)
    /// The frontend corrupted its ring (indices claiming more requests than the ring holds): the device was
    /// disconnected (Closed) and everything of it released before this was thrown.
    case frontendBroke(path: String, reason: String)

    public var description: String {
        switch self {
        case .xenstore(let path, let underlying): "xenstore \(path): \(underlying)"
        case .badKey(let path, let underlying): "frontend \(path): \(underlying)"
        case .resources(let why, let underlying):
            "block backend resources: \(why)" + (underlying.map { ": \($0)" } ?? "")
        case .frontendBroke(let path, let reason): "frontend \(path) broke its ring: \(reason)"
        }
    }
}
