import BlockBack
import BlockDevice
import BlockFront
import CoreMetrics
import Prometheus
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer

/// A driver domain that exports its backends' metrics for Prometheus: swift-prometheus is bootstrapped as the
/// process's swift-metrics backend before the first device connects, the backends count into it with no
/// further set-up, and ``exposition()`` is what a `/metrics` endpoint would answer.
public enum DriverDomainMetrics {
    /// The process's registry, made swift-metrics' backend the first time it is used (a process bootstraps
    /// `MetricsSystem` once).
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()

    /// Every series, in Prometheus' text exposition format.
    public static func exposition() -> String {
        registry.emitToString()
    }

    /// Serves `device` to `guest` as vbd `deviceID` from `driverDomain`: writes the vbd's nodes as the
    /// toolstack does, then serves it in a task that ends when the guest closes the device.
    public static func serve(
        _ device: any BlockDevice, to guest: DomainID, deviceID: UInt32, from driverDomain: SimulatedDomain,
        xenstore server: XenStoreServer
    ) async throws -> Task<Void, any Error> {
        _ = registry  // bootstrapped before the device makes its metrics
        let client = XenStoreClient(transport: server.connect(domain: driverDomain.id))
        let store = XenStoreBus(client: client)
        let nodes = VirtualBlockDeviceNodes(backendDomain: driverDomain.id, frontendDomain: guest, deviceID: deviceID)
        try await nodes.create(in: store)
        return Task {
            do {
                try await BlockBack.serve(
                    device, backendPath: nodes.backendPath, store: store, grants: driverDomain.grantTable,
                    events: driverDomain.eventChannel, options: BlockBackOptions(domain: driverDomain.id))
            } catch {
                await client.close()
                throw error
            }
            await client.close()
        }
    }
}
