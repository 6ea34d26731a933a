import ConsoleBackend
import Foundation
import SimulatedHypervisor
import Synchronization
import XenCore
import XenStoreClient
import XenStoreServer
import XenTestSupport

// MARK: - console section

extension DemoCommand {
    /// A simulated guest boots and prints through its primary console; the xenconsoled-style daemon in dom0
    /// discovers it through `@introduceDomain`, serves it on a pty (path in `tty`) and the demo reads the
    /// text arriving on that pty, then types a command back into the guest.
    @Sendable static func consoleSection() async throws {
        let host = SimulatedHost()
        let dom0 = host.dom0
        let dom0Domain = host.dom0Domain

        // The daemon: every console gets a pty, exactly as xenconsoled serves them.
        let daemon = ConsoleDaemon(
            xenstore: dom0, grantTable: dom0Domain.grantTable, eventChannel: dom0Domain.eventChannel
        ) { _ throws(ConsoleError) -> (any ConsoleSink)? in try PtyConsoleSink() }
        let running = Task { try await daemon.run() }
        print("dom0: console daemon following @introduceDomain / @releaseDomain")

        // The toolstack builds guest 1: domain, primary console ring (grant 0 + unbound port), xenstore keys.
        let guest = try host.createGuest(name: "demo-guest")
        let console = try await host.bootPrimaryConsole(guest)
        let keys = "/local/domain/\(guest.id)/console"
        print(
            "toolstack: dom\(guest.id) console ring-ref=\(host.read(keys + "/ring-ref") ?? "?") "
                + "port=\(host.read(keys + "/port") ?? "?")")

        // The guest prints before anyone listens: the bytes wait in the ring (not lost).
        let boot = "[    0.000000] SwiftXen demo guest booting\r\n[    0.001000] console: hvc0 ready\r\n"
        try await console.write(Array(boot.utf8))
        host.xenstored.introduceDomain(guest.id)
        print("toolstack: introduced dom\(guest.id)")

        var events = daemon.events.makeAsyncIterator()
        guard case .attached(let session)? = await events.next() else {
            throw DemoError.unexpected("the daemon did not attach the guest console")
        }
        let ttyKey = "\(session.frontendPath)/tty"
        var tty = ""
        while tty.isEmpty {
            tty = try await dom0.immediate { handle in try await handle.read(ttyKey) }
            if tty.isEmpty { await Task.yield() }
        }
        print("daemon: attached \(session.id), \(ttyKey) = \(tty)")

        // Play `xl console`: open the pty and read what the guest printed.
        let terminal = try FileHandle(forUpdating: URL(fileURLWithPath: tty))
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("hvc0 ready") {
            seen += terminal.availableData
        }
        for line in String(decoding: seen, as: UTF8.self).split(separator: "\r\n") { print("  [tty] \(line)") }

        // Type into the console: the guest reads it from its `in` ring.
        terminal.write(Data("uname -a\r".utf8))
        var typed: [UInt8] = []
        while !typed.contains(UInt8(ascii: "\r")) { typed += try await console.read() }
        print("guest: read \(String(decoding: typed, as: UTF8.self).debugDescription) from its console")
        try await console.write(Array("SwiftXen demo-guest\r\n".utf8))
        seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("demo-guest") { seen += terminal.availableData }
        print("  [tty] \(String(decoding: seen, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
        try terminal.close()

        // The guest is destroyed and released: the daemon lets the console go.
        host.hypervisor.destroyDomain(guest.id)
        try await ConsoleToolstack.destroyPrimary(domain: guest.id, xenstore: dom0)
        _ = host.xenstored.releaseDomain(guest.id)
        guard case .detached(let id, let reason)? = await events.next() else {
            throw DemoError.unexpected("the daemon did not detach the console")
        }
        print("daemon: detached \(id)\(reason.map { " (\($0))" } ?? " cleanly")")
        let moved = session.statistics
        print("console: \(moved.totalRead) bytes out of the guest, \(moved.totalWrite) bytes in")
        running.cancel()
        _ = await running.result
        await console.close()
        await dom0.close()
    }
}
