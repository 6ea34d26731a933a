import ArgumentParser
import BlockFront
import EventChannel
import GrantTable
import NetBack
import NetifProtocol
import NetworkDevice
import XenCore
import XenStoreClient

/// `swiftxen net ...`: the Xen network backend.
struct NetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "net",
        abstract: "Xen network devices: serve a vif to a guest's netfront, bridged to a TAP device.",
        subcommands: [NetServe.self]
    )
}

/// `swiftxen net serve --domain N [--tap NAME]`: creates the vif's xenstore nodes (unless `--no-create`) and
/// serves domain N's frontend, connection after connection, forwarding its frames to and from a TAP device in
/// this domain, until the vif is unplugged.
struct NetServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a virtual network interface to domain N (needs Xen: gntdev, evtchn, xenstore).",
        discussion: """
            The backend directory is /local/domain/<backend-domain>/backend/vif/<N>/<handle>. With --tap the
            guest's frames go to and from that TAP interface (created if absent; add it to a bridge or give it an
            address yourself). Without --tap, frames from the guest are counted and dropped. With --no-create the
            toolstack (xl) is expected to have written the nodes already.
            """
    )

    @Option(help: "The guest domain whose frontend connects.")
    var domain: UInt16

    @Option(help: "The vif handle (vif<N>.<handle>).")
    var handle: UInt32 = 0

    @Option(help: "The TAP interface to bridge the guest's frames to.")
    var tap: String?

    @Option(help: "The guest's MAC address (default: 00:16:3e plus the domain and handle).")
    var mac: String?

    @Option(help: "The MTU written for the guest.")
    var mtu: Int?

    @Option(help: "This (the backend's) domain id.")
    var backendDomain: UInt16 = 0

    @Option(help: "multi-queue-max-queues.")
    var maxQueues = 4

    @Flag(help: "Do not create the xenstore nodes (the toolstack did).")
    var noCreate = false

    @Option(help: "A xenstored unix socket (default: as libxenstore, XENSTORED_PATH or the xenbus device).")
    var xenstoreSocket: String?

    func run() async throws {
        let address: MACAddress
        if let mac {
            guard let parsed = MACAddress(mac) else { throw ValidationError("bad MAC address \"\(mac)\"") }
            address = parsed
        } else {
            address = MACAddress(rawValue: 0x0016_3E00_0000 | UInt64(domain) << 8 | UInt64(handle & 0xFF))
        }
        let client =
            if let xenstoreSocket { try await XenStoreClient.connect(socketPath: xenstoreSocket) } else {
                try await XenStoreClient.make()
            }
        let store = XenStoreBus(client: client)
        let nodes = VirtualInterfaceNodes(
            backendDomain: DomainID(backendDomain), frontendDomain: DomainID(domain), handle: handle, mac: address,
            mtu: mtu, script: "swiftxen", bridge: tap)
        if !noCreate { try await nodes.create(in: store) }
        var options = NetBackOptions(domain: DomainID(backendDomain))
        options.features.maxQueues = maxQueues
        let back = try await NetBack.open(
            backendPath: nodes.backendPath, store: store, grants: try XenGrantTable(), events: try XenEventChannel(),
            options: options)
        let device: (any NetworkDevice)? = try tap.map { try TapDevice(name: $0) }
        print("swiftxen net: serving \(nodes.backendPath) to domain \(domain) (guest MAC \(back.frontendMAC))")
        if let device { print("swiftxen net: bridged to TAP device \(device.name)") }
        let refused = NetworkCounters()
        let bridge = Task {
            if let device {
                await NetworkBridge.connect(back, device, counters: refused)
            } else {
                for await _ in back.listen() { refused.count(\.txDropped) }
            }
        }
        try await back.serve()
        bridge.cancel()
        await bridge.value
        await device?.disconnect()
        print(
            "swiftxen net: vif unplugged; \(back.connectionCount) connection(s) served; \(back.statistics); "
                + "frames the bridge could not forward: \(refused.snapshot().txDropped)")
        if !noCreate { try await nodes.destroy(in: store) }
    }
}

extension NetworkDevice {
    /// A name for messages: the interface name of a TAP device, else the type.
    fileprivate var name: String { (self as? TapDevice)?.name ?? "\(type(of: self))" }
}
