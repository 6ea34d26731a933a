import BlockFront
import NetBack
import NetifProtocol
import XenCore
import XenStoreClient
import Xenbus

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A real PV domU whose Linux xen-netfront is served by our ``NetBack`` (group `domunet`): the `domu` group's
/// guest in its network mode (scripts/xen/domunet-init.sh), with two vifs written by the runner before it
/// runs. vif 0 (the guest's eth0) is ours: NetBack in dom0, bridged by ``NetworkBridge`` to a TAP interface
/// holding 10.97.0.1; vif 1 (eth1) is served by the dom0 kernel's xen-netback (`vifN.1`, 10.96.0.1), the
/// yardstick. The guest pings dom0, sends its 16 MiB file up and receives dom0's 16 MiB with busybox `nc`
/// through each, md5-checked both ways and timed on the receiving side; then it reloads xen-netfront (rmmod,
/// insmod: both frontends close and connect again) and traffic flows again; then `xl destroy`, and everything
/// is released. Only addresses inside the VM, on interfaces the checks create; IPv6 off.
enum DomUNetChecks {
    static let name = "swiftxen-domunet"
    static let config = "/opt/domu/domunet.cfg"
    /// The MACs domunet-init.sh looks for.
    static let oursMAC = MACAddress(rawValue: 0x0016_3E5A_2000)
    static let kernelMAC = MACAddress(rawValue: 0x0016_3E5A_2001)
    static let tapName = "sxtapu0"
    static let tapAddress: UInt32 = 0x0A61_0001  // 10.97.0.1; the guest's eth0 is 10.97.0.2
    static let kernelAddress: UInt32 = 0x0A60_0001  // 10.96.0.1 on vifN.1; the guest's eth1 is 10.96.0.2
    static let transferBytes = 16 << 20
    static let upPath = "/tmp/domunet-up.bin"
    static let downPath = "/tmp/domunet-down.bin"

    static func run(_ report: Report) async {
        let guest = DomUNet()
        await report.check(
            "domU net: xl create -p; vif 0 to our NetBack (TAP bridge), vif 1 to xen-netback", limit: 180
        ) {
            try await guest.create(report)
        }
        await report.check("domU net: the guest's xen-netfront connects to our NetBack and to xen-netback", limit: 300)
        {
            try await guest.boot(report)
        }
        await report.check("domU net: ping and 16 MiB nc each way through our NetBack (md5 both ways)", limit: 300) {
            try await guest.exercise("NetBack", address: tapAddress, tag: "n", report: report)
        }
        await report.check("domU net: the same through the kernel's xen-netback (same guest, same boot)", limit: 300) {
            try await guest.exercise("xen-netback", address: kernelAddress, tag: "k", report: report)
        }
        await report.check("domU net: throughput, our NetBack against the kernel's xen-netback", limit: 30) {
            try await guest.comparison(report)
        }
        await report.check(
            "domU net: rmmod + insmod xen-netfront; it reconnects to our NetBack, traffic flows", limit: 300
        ) {
            try await guest.reload(report)
        }
        await report.check("domU net: xl destroy; NetBack stops, TAP and vifN.1 go, the domain is freed", limit: 150) {
            try await guest.destroy(report)
        }
        await guest.cleanUp()
    }

    /// Gives `interface` `address`/24 (IPv6 off) and brings it up.
    static func address(_ interface: String, _ address: UInt32) async throws {
        try await NetChecks.disableIPv6(interface)
        _ = try await ChildProcess.checked(
            ["/bin/ip", "addr", "add", "\(dotted(address))/24", "dev", interface], seconds: 10)
        _ = try await ChildProcess.checked(["/bin/ip", "link", "set", "dev", interface, "up"], seconds: 10)
    }

    /// "a=1 b=2" as a dictionary.
    static func fields(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for word in text.split(separator: " ") {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
        }
        return result
    }

    /// Two decimals.
    static func rate(_ value: Double) -> String { "\((value * 100).rounded() / 100)" }
}

extension DomUNet {
    // MARK: - Destroy

    func destroy(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        let client = try unwrap(guest.client, "no xenstore client")
        let bus = XenStoreBus(client: client)
        try await ChildProcess.checked([GuestToolstack.xl, "destroy", "\(domain)"], seconds: 90)
        guest.domain = nil
        // The frontend directory went with the domain: NetBack's serve returns, the bridge ends.
        if let serving {
            try await within(60, "NetBack to stop serving after the domain was destroyed") { try await serving.value }
        }
        if let bridge {
            bridge.cancel()
            await bridge.value
        }
        if let tap {
            await tap.disconnect()
            self.tap = nil
            try await within(30, "the TAP interface to go") {
                while access("/sys/class/net/\(DomUNetChecks.tapName)", F_OK) == 0 {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        if let ours {
            try require(try await bus.state(of: ours.backendPath) == .closed, "our backend is not Closed")
            try await ours.destroy(in: bus)
        }
        // What libxl does for the kernel's vif once the guest is gone: remove the backend; netback removes vifN.1.
        if let kernel {
            try await kernel.destroy(in: bus)
            let interface = kernelInterface
            try await within(30, "\(interface) to go") {
                while access("/sys/class/net/\(interface)", F_OK) == 0 { try await Task.sleep(for: .milliseconds(100)) }
            }
        }
        try await GuestToolstack.waitDetached(.primary, of: domain, consoles: guest.consoles)
        try await GuestToolstack.waitUntilGone(domain)
        let back = try unwrap(back, "no NetBack")
        try require(back.lastBreak == nil, "NetBack broke a connection: \(back.lastBreak ?? "")")
        report.detail(
            "destroyed and released at \(guest.elapsed()); NetBack served \(back.connectionCount) connections; "
                + "\(back.statistics)")
    }

    /// Best effort whatever failed: no domain, no backend, no interface, no nodes left behind.
    func cleanUp() async {
        await guest.destroyDomain()
        await back?.disconnect()
        bridge?.cancel()
        await tap?.disconnect()
        if let client = guest.client {
            let bus = XenStoreBus(client: client)
            if let ours { try? await ours.destroy(in: bus) }
            if let kernel { try? await kernel.destroy(in: bus) }
        }
        await guest.close()
        unlink(DomUNetChecks.upPath)
        unlink(DomUNetChecks.downPath)
    }
}
