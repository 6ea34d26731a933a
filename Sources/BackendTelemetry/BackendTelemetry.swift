package import CoreMetrics
package import Logging
package import XenCore

/// Who one backend device is in its metrics and its log lines: the kind of backend (`vbd`, `vif`, `console`,
/// as in xenstore's `backend/<kind>` directories), the guest it serves and the device's id. A device makes
/// its metric objects here once, when it connects (never per request), and logs through ``logger``, which
/// carries the same identity as metadata (`xen.backend`, `xen.domain`, `xen.device`).
///
/// Metrics go to `factory`, or to `MetricsSystem.factory` (the bootstrapped backend; NOOP until one is)
/// when none is given. Every metric carries the dimensions `backend`, `domain` and `device`, then its own.
///
/// OCaml: none (mirage's backends keep their statistics in records and export no metrics)
package struct BackendTelemetry: Sendable {
    /// `vbd`, `vif` or `console`.
    package let kind: String
    /// The guest served.
    package let domain: DomainID
    /// The device id (a vbd's `devid`, a vif's handle, a console's device).
    package let device: String
    /// Where the metric objects are made.
    package let factory: any MetricsFactory
    /// The caller's logger with the device's identity as metadata.
    package let logger: Logger

    /// The telemetry of one device; `factory` nil means the bootstrapped `MetricsSystem.factory`, read now.
    package init(
        kind: String, domain: DomainID, device: String, factory: (any MetricsFactory)?, logger: Logger
    ) {
        self.kind = kind
        self.domain = domain
        self.device = device
        self.factory = factory ?? MetricsSystem.factory
        var logger = logger
        logger[metadataKey: "xen.backend"] = .string(kind)
        logger[metadataKey: "xen.domain"] = .string(String(domain.rawValue))
        logger[metadataKey: "xen.device"] = .string(device)
        self.logger = logger
    }

    /// The dimensions every metric of the device carries, then `extra`.
    package func dimensions(_ extra: [(String, String)] = []) -> [(String, String)] {
        [("backend", kind), ("domain", String(domain.rawValue)), ("device", device)] + extra
    }

    /// A counter `label` of this device (a metrics backend hands out the same series for the same label
    /// and dimensions, so a reconnecting device goes on counting where it stopped).
    package func counter(_ label: String, _ extra: [(String, String)] = []) -> Counter {
        Counter(label: label, dimensions: dimensions(extra), factory: factory)
    }

    /// A gauge `label` of this device that goes up and down (a swift-metrics `Meter`).
    package func meter(_ label: String, _ extra: [(String, String)] = []) -> Meter {
        Meter(label: label, dimensions: dimensions(extra), factory: factory)
    }
}
