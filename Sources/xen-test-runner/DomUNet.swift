import BlockFront
import ConsoleBackend
import EventChannel
import GrantTable
import NetBack
import NetifProtocol
import NetworkDevice
import XenCore
import XenStoreClient
import Xenbus

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The network test domain and what serves it, carried from check to check (see ``DomUNetChecks``): vif 0
/// served by our ``NetBack`` bridged to a ``TapDevice``, vif 1 by the dom0 kernel's xen-netback.
actor DomUNet {
    var guest = GuestSession()
    var ours: VirtualInterfaceNodes?
    var kernel: VirtualInterfaceNodes?
    var kernelInterface = ""
    var tap: TapDevice?
    var back: NetBack?
    var serving: Task<Void, any Error>?
    var bridge: Task<Void, Never>?
    /// Frames the bridge could not hand on (counted, not lost silently).
    let refused = NetworkCounters()
    /// The md5 of the guest's 16 MiB file (it sends it up) and of dom0's (sent down).
    var upMD5 = ""
    var downMD5 = ""
    /// Measured rates, in MiB/s: [path: (up, down)].
    var rates: [String: (up: Double, down: Double)] = [:]
    // MARK: - Create

    func create(_ report: Report) async throws {
        try require(Files.mode("/sys/module/xen_netback") != nil, "the kernel's xen-netback is not loaded")
        _ = try await ChildProcess.checked(
            ["/bin/dd", "if=/dev/urandom", "of=\(DomUNetChecks.downPath)", "bs=1048576", "count=16"], seconds: 120)
        downMD5 = try await md5(DomUNetChecks.downPath)
        guest = try await GuestToolstack.start(config: DomUNetChecks.config, name: DomUNetChecks.name)
        let domain = try unwrap(guest.domain, "no domain")
        let client = try unwrap(guest.client, "no xenstore client")
        let bus = XenStoreBus(client: client)

        // vif 0: ours. The frontend directory is the guest's device/vif/0 (its xen-netfront claims it); the
        // backend directory is of a class dom0's xen-netback does not serve.
        let ours = VirtualInterfaceNodes(
            backendDomain: .dom0, frontendDomain: domain, handle: 0, mac: DomUNetChecks.oursMAC, script: "swiftxen",
            backendClass: "swiftxen-vif")
        try await ours.create(in: bus)
        self.ours = ours
        let tap = try TapDevice(name: DomUNetChecks.tapName)
        self.tap = tap
        try await DomUNetChecks.address(tap.name, DomUNetChecks.tapAddress)
        let back = try await NetBack.open(
            backendPath: ours.backendPath, store: bus, grants: try XenGrantTable(), events: try XenEventChannel(),
            options: NetBackOptions(domain: .dom0))
        self.back = back
        serving = Task { try await back.serve() }
        let refused = refused
        bridge = Task { await NetworkBridge.connect(back, tap, counters: refused) }

        // vif 1: the kernel's, as libxl would write it, with the hotplug script's answer (none runs here).
        let kernel = VirtualInterfaceNodes(
            backendDomain: .dom0, frontendDomain: domain, handle: 1, mac: DomUNetChecks.kernelMAC, script: "/bin/true")
        try await kernel.create(in: bus)
        self.kernel = kernel
        try await bus.write(kernel.backendPath + "/hotplug-status", "connected")
        kernelInterface = "vif\(domain).1"
        let interface = kernelInterface
        try await within(60, "xen-netback creates \(interface)") {
            while access("/sys/class/net/\(interface)", F_OK) != 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        try await DomUNetChecks.address(interface, DomUNetChecks.kernelAddress)
        report.detail(
            "domid \(domain) created in \(guest.elapsed()); vif 0 \(ours.backendPath) -> NetBack -> TAP \(tap.name) "
                + "\(dotted(DomUNetChecks.tapAddress)); vif 1 \(kernel.backendPath) -> xen-netback -> \(interface) "
                + "\(dotted(DomUNetChecks.kernelAddress))")
    }

    func md5(_ path: String) async throws -> String {
        String(try await ChildProcess.checked(["/bin/md5sum", path], seconds: 60).prefix(32))
    }

    // MARK: - Boot

    func boot(_ report: Report) async throws {
        let (session, reader, tty) = try await guest.openPrimary()
        guest.primary = reader
        let transcript = try await guest.unpause(untilReady: false)
        let client = try unwrap(guest.client, "no xenstore client")
        upMD5 = try await transcript.wait(for: "data md5=", seconds: 120)
        let interfaces = try await transcript.wait(for: "ifaces ", seconds: 120)
        let fields = DomUNetChecks.fields(interfaces)
        let back = try unwrap(back, "no NetBack")
        let negotiated = try unwrap(back.negotiated, "our NetBack has no connection (\(back.lastBreak ?? ""))")
        try require(back.connectionCount == 1, "our NetBack served \(back.connectionCount) connections")
        try require(
            fields["queues"] == "\(negotiated.queues)",
            "the guest's \(fields["ours"] ?? "?") has \(fields["queues"] ?? "?") tx queues, NetBack \(negotiated.queues)"
        )
        let bus = XenStoreBus(client: client)
        let kernel = try unwrap(self.kernel, "no kernel vif")
        let kernelState = try await bus.state(of: kernel.backendPath)
        try require(kernelState == .connected, "xen-netback is \(String(describing: kernelState))")
        report.detail(
            "\(session.id) on \(tty); guest up, interfaces \(interfaces) at \(guest.elapsed()); NetBack: "
                + "\(negotiated.queues) queue(s), split channels \(negotiated.splitEventChannels), GSO from the "
                + "guest \(negotiated.txGSO.map { "\($0)" }.sorted()), to it \(negotiated.rxGSO.map { "\($0)" }.sorted()), "
                + "rx-notify \(negotiated.rxNotify)")
    }

    // MARK: - Commands to the guest

    /// Types `command` (prefixed with `id`) on the guest's console and returns its answer's text.
    func ask(_ id: String, _ command: String, seconds: Int) async throws -> String {
        try await guest.ask(id, command, seconds: seconds)
    }

    func ping(_ id: String, _ address: UInt32) async throws {
        let answer = try await ask(id, "ping \(dotted(address))", seconds: 60)
        try require(answer == "ping=5/5", "the guest's ping of \(dotted(address)): \(answer)")
    }

    /// The guest sends its 16 MiB file to `address:port` with nc; dom0 receives, times and md5-checks it.
    func upload(_ id: String, to address: UInt32, port: UInt16) async throws -> KernelTCP.Transfer {
        let listener = try KernelTCP(address: address, port: port)
        async let received = listener.receive(into: DomUNetChecks.upPath, within: 60)
        try unwrap(guest.primary, "no console").type("\(id) send \(dotted(address)) \(port)\n")
        let transfer = try await received
        listener.close()
        let answer = try await guest.transcript.wait(for: "\(id) ", seconds: 60)
        try require(answer.hasPrefix("sent rc=0"), "the guest's nc to \(dotted(address)):\(port): \(answer)")
        let sum = try await md5(DomUNetChecks.upPath)
        unlink(DomUNetChecks.upPath)
        try require(
            transfer.bytes == DomUNetChecks.transferBytes && sum == upMD5,
            "dom0 received \(transfer.bytes) B md5 \(sum); the guest sent \(DomUNetChecks.transferBytes) B md5 \(upMD5)"
        )
        return transfer
    }

    /// Dom0 sends its 16 MiB file to the guest's nc (which connects to `address:port`); the guest reports the
    /// md5 and its own time (receiver side, centiseconds). Returns MiB/s as the guest measured it.
    func download(_ id: String, from address: UInt32, port: UInt16) async throws -> Double {
        let listener = try KernelTCP(address: address, port: port)
        async let sent = listener.send(DomUNetChecks.downPath, within: 60)
        try unwrap(guest.primary, "no console").type("\(id) recv \(dotted(address)) \(port)\n")
        let transfer = try await sent
        listener.close()
        let answer = DomUNetChecks.fields(try await guest.transcript.wait(for: "\(id) received ", seconds: 120))
        try require(
            answer["md5"] == downMD5 && answer["bytes"] == "\(DomUNetChecks.transferBytes)"
                && transfer.bytes == DomUNetChecks.transferBytes,
            "dom0 sent \(transfer.bytes) B md5 \(downMD5); the guest received \(answer)")
        let centis = try unwrap(answer["cs"].flatMap { Double($0) }, "no time in \(answer)")
        return Double(DomUNetChecks.transferBytes) / 1_048_576 / max(centis / 100, 0.01)
    }

    // MARK: - Paths

    /// Ping, then 16 MiB up and 16 MiB down through one path, md5-checked both ways; the rates are kept.
    func exercise(_ path: String, address: UInt32, tag: String, report: Report) async throws {
        try await ping("\(tag)p", address)
        let up = try await upload("\(tag)u", to: address, port: 5001)
        let down = try await download("\(tag)d", from: address, port: 5002)
        rates[path] = (up.megabytesPerSecond, down)
        var text = "ping 5/5; guest->dom0 \(up) (dom0 timed); dom0->guest 16 MiB in "
        text += "\(DomUNetChecks.rate(down)) MiB/s (guest timed); both md5 equal"
        if path == "NetBack", let back {
            text += "; NetBack \(back.statistics); bridge refused \(refused.snapshot().txDropped)"
        }
        report.detail(text)
    }

    func comparison(_ report: Report) async throws {
        let ours = try unwrap(rates["NetBack"], "no NetBack measurement")
        let kernel = try unwrap(rates["xen-netback"], "no xen-netback measurement")
        report.detail(
            "guest->dom0: NetBack \(DomUNetChecks.rate(ours.up)) MiB/s, xen-netback \(DomUNetChecks.rate(kernel.up)) "
                + "MiB/s, ratio \(DomUNetChecks.rate(ours.up / kernel.up)); dom0->guest: NetBack "
                + "\(DomUNetChecks.rate(ours.down)) MiB/s, xen-netback \(DomUNetChecks.rate(kernel.down)) MiB/s, "
                + "ratio \(DomUNetChecks.rate(ours.down / kernel.down))")
    }

    // MARK: - The guest's driver reconnects

    func reload(_ report: Report) async throws {
        let back = try unwrap(back, "no NetBack")
        let answer = try await ask("r1", "reload", seconds: 150)
        try require(answer.hasPrefix("reloaded "), "reload: \(answer)")
        try await within(60, "the second connection to our NetBack") {
            while back.connectionCount < 2 || back.negotiated == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        try await ping("r1p", DomUNetChecks.tapAddress)
        try await ping("r1k", DomUNetChecks.kernelAddress)
        let down = try await download("r1d", from: DomUNetChecks.tapAddress, port: 5003)
        try require(back.lastBreak == nil, "NetBack broke a connection: \(back.lastBreak ?? "")")
        report.detail(
            "\(answer); NetBack connection \(back.connectionCount), ping 5/5 through both vifs, 16 MiB down again "
                + "md5 equal (\(DomUNetChecks.rate(down)) MiB/s) at \(guest.elapsed())")
    }
}
