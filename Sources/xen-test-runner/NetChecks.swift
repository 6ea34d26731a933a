import BlockFront
import EventChannel
import GrantTable
import NetBack
import NetFront
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

/// The network devices on real Xen, with dom0's kernel on the other end: our NetFront (dom0 userspace, pages
/// shared through gntalloc) against the kernel's xen-netback, whose `vif0.0` carries an address only inside
/// this VM; grant copy through gntdev; and our NetBack serving our NetFront, bridged to a TAP interface of
/// the kernel. ARP, ping and UDP streams are built and checked by the runner (``TinyHost``).
enum NetChecks {
    static let kernelAddress: UInt32 = 0x0A63_0001  // 10.99.0.1 on vif0.0
    static let frontAddress: UInt32 = 0x0A63_0002  // 10.99.0.2, our NetFront
    static let tapAddress: UInt32 = 0x0A62_0001  // 10.98.0.1 on the TAP interface
    static let bridgedAddress: UInt32 = 0x0A62_0002  // 10.98.0.2, our NetFront behind our NetBack
    static let streamBytes = 1 << 20

    static func run(_ report: Report) async {
        report.check("grant copy: xengnttab_grant_copy both ways on a gntalloc page", limit: 30) {
            try grantCopy()
        }
        await report.check(
            "NetFront: against Linux xen-netback (vif0.0), ping, UDP both ways, GSO, reconnect", limit: 240
        ) {
            try await frontAgainstKernel(report)
        }
        await report.check("NetBack <-> NetFront in dom0 userspace, bridged to a TAP interface", limit: 240) {
            try await backBridgedToTap(report)
        }
    }

    // MARK: - Grant copy

    static func grantCopy() throws {
        let sharer = try XenGntshr()
        let share = SharedPagesHandle(try sharer.sharePages(with: .dom0, count: 1, writable: true))
        defer { try? share.unshare() }
        for index in 0..<4096 { share.buffer.setUInt8(UInt8(truncatingIfNeeded: index &* 13), at: index) }
        let table = try XenGrantTable()
        let local = PageBuffer(pages: 2)
        try table.copy([
            GrantCopySegment(
                from: .foreign(domain: .dom0, ref: share.refs[0], offset: 100),
                to: .local(local.slice(from: 4000, count: 300)), length: 300)
        ])
        try require(
            local.slice(from: 4000, count: 300).contentsEqual(share.buffer.slice(from: 100, count: 300)),
            "bytes copied from the grant differ")
        local.slice(from: 0, count: 512).fill(0xA5)
        try table.copy([
            GrantCopySegment(
                from: .local(local.slice(from: 0, count: 512)),
                to: .foreign(domain: .dom0, ref: share.refs[0], offset: 3584),
                length: 512)
        ])
        try require(
            share.buffer.slice(from: 3584, count: 512).bytes.allSatisfy { $0 == 0xA5 }, "copy into the grant lost")
        var refused = false
        do {
            try table.copy([
                GrantCopySegment(
                    from: .foreign(domain: .dom0, ref: GrantRef(share.refs[0].rawValue &+ 5000), offset: 0),
                    to: .local(local), length: 16)
            ])
        } catch { refused = true }
        try require(refused, "a copy from a ref never granted succeeded")
    }

    /// IPv6 off on a new interface; its sysctl directory appears a moment after its sysfs node (seen once
    /// on a loaded host), so the write is retried for a while.
    static func disableIPv6(_ interface: String) async throws {
        try await within(10, "IPv6 to be disabled on \(interface)") {
            while !PacketSocket.disableIPv6(interface) { try await Task.sleep(for: .milliseconds(100)) }
        }
    }

    // MARK: - NetFront against xen-netback

    static func frontAgainstKernel(_ report: Report) async throws {
        let client = try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
        defer { Task { await client.close() } }
        let bus = XenStoreBus(client: client)
        // Not device/vif: the kernel has no xen-netfront loaded, but keep clear of it anyway.
        let nodes = VirtualInterfaceNodes(
            backendDomain: .dom0, frontendDomain: .dom0, handle: 0, mac: MACAddress(rawValue: 0x0016_3E5A_0001),
            script: "/bin/true", deviceClass: "swiftxen-vif")
        try await bus.remove(nodes.backendPath)
        try await bus.remove(nodes.frontendPath)
        try await nodes.create(in: bus)
        // What the vif hotplug script writes: xen-netback holds Connected back until it reads it.
        try await bus.write(nodes.backendPath + "/hotplug-status", "connected")
        let interface = "vif0.0"
        try await within(60, "xen-netback creates \(interface)") {
            while access("/sys/class/net/\(interface)", F_OK) != 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        try await disableIPv6(interface)
        _ = try await ChildProcess.checked(["/bin/ip", "addr", "add", "10.99.0.1/24", "dev", interface], seconds: 10)
        _ = try await ChildProcess.checked(["/bin/ip", "link", "set", "dev", interface, "up"], seconds: 10)
        defer { Task { try? await bus.remove(nodes.backendPath) } }

        var details: [String] = []
        defer { report.detail(details.joined(separator: "; ")) }
        for round in 1...2 {
            let front = try await within(60, "NetFront.connect (round \(round))") {
                try await NetFront.connect(
                    "0", store: bus, grants: try XenGrantTable(), events: try XenEventChannel(), options: frontOptions)
            }
            let table = front.negotiated
            details.append(
                "round \(round): \(table.queues) queue(s) of \(front.backendFeatures.maxQueues), split channels "
                    + "\(table.splitEventChannels), GSO to netback \(table.txGSO.map { "\($0)" }.sorted()), "
                    + "from it \(table.rxGSO.map { "\($0)" }.sorted()), max frame \(front.maxFrameSize)")
            do {
                details.append(
                    try await exercise(
                        front, kernel: kernelAddress, us: frontAddress, interface: interface, full: round == 1))
            } catch {
                await front.disconnect()
                throw error
            }
            try await within(60, "disconnect") { await front.disconnect() }
            try require(
                try await bus.state(of: nodes.backendPath) == .closed, "xen-netback not Closed after disconnect")
        }
        // Unplugging the vif removes the kernel's interface.
        try await bus.remove(nodes.backendPath)
        try await within(30, "\(interface) goes away") {
            while access("/sys/class/net/\(interface)", F_OK) == 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        try await bus.remove(nodes.frontendPath)
    }

    static var frontOptions: NetFrontOptions {
        var options = NetFrontOptions(domain: .dom0)
        options.deviceClass = "swiftxen-vif"
        options.queues = 2
        // gntalloc allows 1024 pages for everyone: 2 queues × (2 rings + 64 + 64 buffers).
        options.rxBuffers = 64
        options.txBuffers = 64
        return options
    }

    /// Ping, then a UDP stream each way (blank and computed checksums alternating), then one 64 KiB GSO frame
    /// seen whole by a packet socket on the kernel's interface.
    static func exercise(
        _ device: any NetworkDevice, kernel: UInt32, us: UInt32, interface: String, full: Bool
    ) async throws -> String {
        let host = TinyHost(device: device, address: us, peer: kernel)
        let running = Task { await host.run() }
        defer { running.cancel() }
        let kernelMAC = try await within(30, "ARP") { try await host.resolvePeer() }
        for sequence in 0..<(full ? 10 : 3) {
            _ = try await within(10, "ping \(sequence)") { try await host.ping(sequence: UInt16(sequence)) }
        }
        guard full else { return "ARP and 3 pings" }
        let socket = try KernelUDP(address: kernel, port: 7000)
        socket.startReceiving()
        defer { Task { await socket.close() } }
        // Up: our datagrams into the kernel's socket, in batches the socket buffer always holds.
        var sentHash: UInt64 = 0
        var sent = 0
        var index = 0
        while sent < streamBytes {
            let payload = datagram(index)
            try await host.sendUDP(payload, from: 7001, to: 7000, checksum: index % 2 == 0 ? .blank : .validated)
            sentHash = streamHash(sentHash, payload)
            sent += payload.count
            index += 1
            if index % 32 == 0 || sent >= streamBytes {
                let expected = index
                try await within(30, "kernel receives \(expected) datagrams") {
                    while socket.counts.datagrams < expected { try await Task.sleep(for: .milliseconds(5)) }
                }
            }
        }
        try require(socket.counts.hash == sentHash && socket.counts.bytes == sent, "up stream differs")
        // Down: the kernel's datagrams to us (its checksums offloaded to netback, then to us).
        var downHash: UInt64 = 0
        var down = 0
        index = 0
        while down < streamBytes {
            let batch = (0..<32).map { datagram(100_000 + index + $0) }
            let delivered = await blocking { batch.allSatisfy { socket.send($0, to: us, port: 7001) } }
            try require(delivered, errnoText("sendto"))
            for payload in batch {
                downHash = streamHash(downHash, payload)
                down += payload.count
            }
            index += 32
            let expected = index
            try await within(30, "we receive \(expected) datagrams") {
                while host.received.datagrams < expected { try await Task.sleep(for: .milliseconds(5)) }
            }
        }
        let received = host.received
        try require(received.hash == downHash && received.bytes == down, "down stream differs")
        try require(received.badChecksums == 0, "\(received.badChecksums) datagrams with bad UDP checksums")
        // GSO: one 64 KiB TCP frame, whole on the kernel's interface.
        let capture = try PacketSocket(interface: interface)
        let frame = gsoFrame(from: device.mac, to: kernelMAC, source: us, destination: kernel)
        let sentFrame = PageBuffer(copying: frame.bytes)
        try await device.write(NetworkFrame(data: frame, checksum: .blank))
        let seen = await blocking { capture.receive(within: 10_000) { $0.count == 65535 } }
        let seenFrame = try unwrap(seen, "the 64 KiB GSO frame never reached \(interface)")
        try require(
            seenFrame.slice(from: 54, count: 65535 - 54).contentsEqual(sentFrame.slice(from: 54, count: 65535 - 54)),
            "the GSO frame's payload changed on the way")
        return
            ("ARP, 10 pings, \(index) datagrams each way (\(sent) B up, \(down) B down), checksums good; 64 KiB GSO frame whole; "
            + "\(device.statistics)")
    }

    /// Datagram `index`: 1200–1472 bytes of a pattern.
    static func datagram(_ index: Int) -> PageBuffer {
        let size = 1200 + index % 273
        let payload = PageBuffer(pages: 1).slice(from: 0, count: size)
        var value = UInt32(truncatingIfNeeded: index) &* 2_654_435_761
        for offset in 0..<size {
            value = value &* 1_103_515_245 &+ 12345
            payload.setUInt8(UInt8(truncatingIfNeeded: value >> 16), at: offset)
        }
        return payload
    }

    /// A 65535-byte IPv4/TCP frame (to the discard port) with its checksum blank.
    static func gsoFrame(
        from source: MACAddress, to destination: MACAddress, source ip: UInt32, destination peer: UInt32
    )
        -> PageBuffer
    {
        let frame = PageBuffer(pages: 16).slice(from: 0, count: 65535)
        destination.write(to: frame, at: 0)
        source.write(to: frame, at: 6)
        frame.setUInt16(UInt16(0x0800).byteSwapped, at: 12)
        let header: [UInt8] = [0x45, 0, 0xFF, 0xF1, 0, 7, 0x40, 0, 64, 6, 0, 0]
        for (offset, byte) in header.enumerated() { frame.setUInt8(byte, at: 14 + offset) }
        frame.setUInt32(ip.byteSwapped, at: 26)
        frame.setUInt32(peer.byteSwapped, at: 30)
        frame.setUInt16((~InternetChecksum.sum(frame, from: 14, count: 20)).byteSwapped, at: 24)
        let tcp: [UInt8] = [0x9C, 0x40, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
        for (offset, byte) in tcp.enumerated() { frame.setUInt8(byte, at: 34 + offset) }
        for offset in 54..<65535 { frame.setUInt8(UInt8(truncatingIfNeeded: offset &* 7), at: offset) }
        FrameChecksum.setPseudoHeader(frame)
        return frame
    }

    // MARK: - NetBack bridged to a TAP interface

    static func backBridgedToTap(_ report: Report) async throws {
        let client = try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
        defer { Task { await client.close() } }
        let bus = XenStoreBus(client: client)
        // Both directories off the kernel's classes: neither xen-netback nor xen-netfront claims the vif.
        let nodes = VirtualInterfaceNodes(
            backendDomain: .dom0, frontendDomain: .dom0, handle: 1, mac: MACAddress(rawValue: 0x0016_3E5A_0002),
            script: "swiftxen", deviceClass: "swiftxen-vif", backendClass: "swiftxen-vif")
        try await bus.remove(nodes.backendPath)
        try await bus.remove(nodes.frontendPath)
        try await nodes.create(in: bus)
        let tap = try TapDevice(name: "sxtap0")
        try await disableIPv6(tap.name)
        _ = try await ChildProcess.checked(["/bin/ip", "addr", "add", "10.98.0.1/24", "dev", tap.name], seconds: 10)
        _ = try await ChildProcess.checked(["/bin/ip", "link", "set", "dev", tap.name, "up"], seconds: 10)
        let back = try await NetBack.open(
            backendPath: nodes.backendPath, store: bus, grants: try XenGrantTable(), events: try XenEventChannel(),
            options: NetBackOptions(domain: .dom0))
        let serving = Task { try await back.serve() }
        let bridge = Task { await NetworkBridge.connect(back, tap) }
        let options = frontOptions
        let front = try await within(60, "NetFront.connect to our NetBack") {
            try await NetFront.connect(
                "1", store: bus, grants: try XenGrantTable(), events: try XenEventChannel(), options: options)
        }
        let setup = "NetBack: \(back.negotiated?.queues ?? 0) queue(s), grant copy through gntdev, TAP \(tap.name)"
        do {
            report.detail(
                setup + "; "
                    + (try await exercise(
                        front, kernel: tapAddress, us: bridgedAddress, interface: tap.name, full: true)))
        } catch {
            await front.disconnect()
            await back.disconnect()
            bridge.cancel()
            await tap.disconnect()
            throw error
        }
        try await within(60, "NetFront disconnect") { await front.disconnect() }
        try require(try await bus.state(of: nodes.backendPath) == .closed, "NetBack not Closed after the frontend left")
        try await within(30, "NetBack disconnect") { await back.disconnect() }
        try await serving.value
        bridge.cancel()
        await bridge.value
        await tap.disconnect()
        try require(back.statistics.rxErrors == 0 && back.lastBreak == nil, "NetBack: \(back.lastBreak ?? "errors")")
        try await nodes.destroy(in: bus)
    }
}
