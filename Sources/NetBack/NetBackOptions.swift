public import CoreMetrics
public import Logging
public import NetifProtocol
public import XenCore

/// What a network backend offers, and how it serves.
///
/// OCaml: `Features.supported` with `gso_tcpv4 = false` (mirage-net-xen's backend), `create_backend_device`
public struct NetBackOptions: Sendable {
    /// This (the backend's) domain.
    public var domain: DomainID
    /// The features advertised before InitWait (every one by default).
    public var features = NetifBackendFeatures()
    /// The backend's own MAC (the frontend's is in the `mac` key); libxl's convention by default.
    public var mac = Netif.defaultBackendMAC
    /// Frames received from the frontend and not yet read before its tx ring is held back.
    public var frameQueueCapacity = 512
    /// Fill in blank checksums of frames from the frontend (delivering them `.validated`); off, they arrive
    /// `.blank` (a bridge to a TAP device passes them on for the kernel to finish).
    public var completeBlankChecksums = false
    /// Write `hotplug-status = connected` (what the vif hotplug script writes once the host side is plumbed;
    /// the backend is its own script here).
    public var writeHotplugStatus = true
    /// How often a writer waiting for rx requests looks again when the frontend does not notify on them
    /// (no `feature-rx-notify`).
    public var rxPollInterval: Duration = .milliseconds(10)
    /// How long ``NetBack/disconnect()`` waits for the frontend to close.
    public var closeTimeout: Duration = .seconds(10)
    /// Where the vif logs (at `debug`: each connection, its end, a frontend breaking the protocol), with its
    /// identity as metadata (`xen.backend` = `vif`, `xen.domain`, `xen.device` = the handle). Nothing is
    /// logged above `debug`: a hostile frontend must not flood the driver domain's log; the metrics count it.
    ///
    /// OCaml: none (mirage logs through `Logs` sources)
    public var logger = Logger(label: "swiftxen.netback")
    /// Where the vif's metrics go (listed in the BlockBack documentation's "Metrics" article); nil:
    /// `MetricsSystem.factory`, the backend bootstrapped when the vif is opened (NOOP if none).
    ///
    /// OCaml: none (`Netif.get_stats_counters` is the pull-based twin)
    public var metricsFactory: (any MetricsFactory)?

    /// Every feature offered, four queues.
    public init(domain: DomainID) { self.domain = domain }
}

/// Why serving a vif stopped.
///
/// OCaml: `Netif.make_backend` fails with `Failure` / xenstore exceptions
public enum NetBackError: Error, Sendable, CustomStringConvertible {
    /// A xenstore operation failed at `path`; `underlying` is the xenstore seam's own error (`XenStoreError`
    /// through `XenStoreBus`).
    case xenstore(path: String, underlying: any Error)
    /// The toolstack's keys for the vif are absent or malformed.
    case badKey(NetifKeyError, path: String)

    public var description: String {
        switch self {
        case .xenstore(let path, let underlying): "xenstore \(path): \(underlying)"
        case .badKey(let error, let path): "\(path): \(error)"
        }
    }
}
