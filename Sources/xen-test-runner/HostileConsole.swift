import BlockFront
import ConsoleBackend
import GrantTable
import XenCore
import XenStoreClient
import Xenbus

/// The hostile guest against our console backend: extra consoles (`device/console/<devid>`, which dom0
/// creates once the guest turned xenbus autoprobe off, so its kernel's console frontend leaves them alone)
/// whose frontend is the guest's runner, offering a ring and then breaking it.
enum HostileConsole {
    /// `con MODE FRONT`: `overflow` connects, writes one line, then sets `out_prod` 5000 beyond `out_cons`;
    /// `never-granted` offers a ring-ref that is no longer granted.
    static func run(_ mode: String, front: String, devices: GuestDevices) async throws -> String {
        let bus = devices.bus
        let back = try unwrap(try await bus.read(front + "/" + ConsoleKeys.backend), "no backend key in \(front)")
        let share = SharedPagesHandle(try devices.gntshr.sharePages(with: .dom0, count: 1, writable: true))
        let port = try devices.events.bindUnboundPort(remote: .dom0)
        defer {
            try? devices.events.unbind(port)
            try? share.unshare()
        }
        var ref = share.refs[0]
        if mode == "never-granted" {
            let once = SharedPagesHandle(try devices.gntshr.sharePages(with: .dom0, count: 1, writable: true))
            ref = once.refs[0]
            try once.unshare()
        }
        try await bus.write([
            (front + "/" + ConsoleKeys.ringRef, "\(ref)"), (front + "/" + ConsoleKeys.port, "\(port)"),
            (front + "/" + ConsoleKeys.state, XenbusState.initialised.xenstoreValue),
        ])
        guard mode == "overflow" else { return "offered ref=\(ref)" }
        let connected = try await within(60, "the console backend to connect") {
            try await bus.waitForState(of: back, orGone: true) { $0 == .connected || $0 == .closed }
        }
        try require(connected == .connected, "the console backend is \(String(describing: connected))")
        let ring = share.buffer
        let line = Array("XT-HCON hello\n".utf8)
        for (index, byte) in line.enumerated() { ring.setUInt8(byte, at: 1024 + index) }
        ring.setUInt32(UInt32(line.count), at: 3084)  // out_prod
        try devices.events.notify(port)
        try await Task.sleep(for: .seconds(1))
        let consumed = ring.uint32(at: 3080)  // out_cons
        ring.setUInt32(consumed &+ 5000, at: 3084)
        try devices.events.notify(port)
        let after = try await within(60, "the console backend to disconnect") {
            try await bus.waitForState(of: back, orGone: true) { $0 == .closing || $0 == .closed }
        }
        try await bus.write(front + "/" + ConsoleKeys.state, XenbusState.closed.xenstoreValue)
        return "consumed=\(consumed) after=\(after.map { "\($0)" } ?? "gone")"
    }
}

extension Hostile {
    /// Two extra consoles of the guest, each broken its own way; our ConsoleDaemon must drop each with a typed
    /// error while the primary console (on which the guest answers) keeps working.
    func consoleAttacks(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        let client = try unwrap(guest.client, "no xenstore client")
        let daemon = try unwrap(guest.daemon, "no console daemon")
        let consoles = guest.consoles
        var seen: [String] = []
        for (devid, mode, expected) in [(1, "overflow", "protocol violation"), (2, "never-granted", "grant map")] {
            let id = ConsoleID(domain: domain, device: .extra(UInt32(devid)))
            try await ConsoleToolstack.createDevice(id, name: "hostile-\(devid)", xenstore: client)
            let answer = try await guest.ask("k\(devid)", "con \(mode) \(id.frontendPath)", seconds: 120)
            let reason = try await Poll.poll(60, "ConsoleDaemon to detach \(id)") {
                consoles.detached.withLock { $0.first { $0.0 == id } }.map { "\($0.1.map { "\($0)" } ?? "no error")" }
            }
            try require(reason.contains(expected), "\(id) (\(mode)) detached with \"\(reason)\", want \(expected)")
            let failed = await daemon.failedConsoles
            try require(failed.contains(id), "the daemon does not list \(id) as failed: \(failed)")
            try await ConsoleToolstack.destroyDevice(id, xenstore: client)
            seen.append("\(mode): guest \(answer); daemon: \(reason)")
        }
        let primary = ConsoleID(domain: domain, device: .primary)
        try require(
            consoles.detached.withLock { list in !list.contains { $0.0 == primary } },
            "the primary console was detached too")
        report.detail(seen.joined(separator: "; "))
    }
}

extension Hostile {
    /// The guest's primary console broken the way only the guest itself can: its kernel owns the page the
    /// domain builder set up and granted to dom0 (GNTTAB_RESERVED_CONSOLE), so it can write any index there.
    /// Dom0 maps that grant and writes the guest's index, `in_cons`, 5000 past `in_prod` (the bytes a hostile
    /// kernel would write), then types on the console: our ConsoleDaemon must drop the primary console with a
    /// typed error instead of writing input outside the ring, and keep serving everything else. The guest
    /// answers commands on this console, so this is the group's last attack.
    func primaryConsoleAttack(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        let daemon = try unwrap(guest.daemon, "no console daemon")
        let consoles = guest.consoles
        let primary = ConsoleID(domain: domain, device: .primary)
        let table = try XenGrantTable()
        let mapping = try table.map(domain: domain, ref: .reservedConsole, writable: true)
        let (inProd, inCons) = Self.breakInputConsumer(mapping.buffer, by: 5000)
        try mapping.unmap()
        try unwrap(guest.primary, "no pty").type("x")
        let reason = try await Poll.poll(60, "ConsoleDaemon to drop \(primary)") {
            consoles.detached.withLock { $0.first { $0.0 == primary } }.map { "\($0.1.map { "\($0)" } ?? "no error")" }
        }
        primaryBroken = true
        try require(
            reason.contains("consumerOutOfRange") && reason.contains("ring: ConsoleBackend.ConsoleRingDirection.input"),
            "\(primary) detached with \"\(reason)\", want the input ring's consumerOutOfRange")
        let failed = await daemon.failedConsoles
        try require(failed.contains(primary), "the daemon does not list \(primary) as failed: \(failed)")
        try await bystanderTrip()
        report.detail(
            "dom0 mapped grant 0 of dom\(domain): in_prod \(inProd), in_cons \(inCons) -> \(inProd &+ 5000); "
                + "daemon: \(reason); bystander round trips \(trips)")
    }

    /// Writes `in_cons` `distance` bytes past `in_prod` on a primary console page; returns both as found.
    private static func breakInputConsumer(_ page: PageBuffer, by distance: UInt32) -> (UInt32, UInt32) {
        let inProd = page.uint32(at: ConsoleRingLayout.inProdOffset)
        let inCons = page.uint32(at: ConsoleRingLayout.inConsOffset)
        page.setUInt32(inProd &+ distance, at: ConsoleRingLayout.inConsOffset)
        return (inProd, inCons)
    }
}
