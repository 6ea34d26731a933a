import BlockBack
import BlockFront
import ConsoleBackend
import XenCore
import XenStoreClient
import Xenbus

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The domU checks past the first exchange: a second console, the toolstack detaching and re-attaching the
/// disk, the guest's driver reconnecting, and the end of the domain.
extension DomU {
    // MARK: - A second console

    func secondConsole(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        let client = try unwrap(guest.client, "no xenstore client")
        let id = ConsoleID(domain: domain, device: .extra(DomUChecks.secondConsole))
        let session = try await guest.consoles.session(id, within: 90)
        let ttyKey = "\(id.frontendPath)/\(ConsoleKeys.tty)"
        let tty = try await Poll.poll(30, "the daemon to publish \(ttyKey)") {
            try? await client.immediate { handle in try await handle.read(ttyKey) }
        }
        let reader = try PtyReader(path: tty, marker: "XT-HVC1")
        second = reader
        _ = try await guest.transcript.wait(for: "hvc1=sent", seconds: 90)
        let line = try await reader.transcript.wait(for: "hello", seconds: 30)
        try require(line == " through the second console", "the second console carried \"\(line)\"")
        report.detail("\(session.id) on pty \(tty) at \(guest.elapsed())")
    }

    // MARK: - The toolstack detaches and re-attaches xvda

    func detachAndReattach(_ report: Report) async throws {
        let transcript = try guest.transcript
        let nodes = try unwrap(nodes, "no vbd nodes")
        let bus = XenStoreBus(client: try unwrap(guest.client, "no xenstore client"))
        let serving = try unwrap(blockBack, "BlockBack is not serving")
        _ = try await transcript.wait(for: "detach-ready", seconds: 60)
        // libxl's remove: online 0, backend Closing, wait for Closed, remove both directories.
        try await within(90, "the toolstack to detach the vbd") { try await nodes.detach(in: bus) }
        let served = try await within(30, "BlockBack to stop serving the detached vbd") { try await serving.value }
        try unwrap(guest.primary, "no pty").type("detached\n")
        let gone = try await transcript.wait(for: "detached=", seconds: 60)
        try require(gone == "yes", "the guest's /dev/xvda is still there after the detach")
        // The guest wrote to its disk earlier: the file's md5 now is what it must read again.
        expectedMD5 = try await fileMD5()
        try await nodes.create(in: bus)
        try startServing()
        try unwrap(guest.primary, "no pty").type("attached\n")
        let md5 = try await transcript.wait(for: "reattached md5=", seconds: 150)
        try require(md5 == expectedMD5, "after re-attaching the guest read md5 \(md5), the file has \(expectedMD5)")
        report.detail(
            "served \(served) connection(s) before the detach; re-attached and read back at \(guest.elapsed())")
    }

    // MARK: - The guest's driver reconnects

    func reload(_ report: Report) async throws {
        let transcript = try guest.transcript
        let nodes = try unwrap(nodes, "no vbd nodes")
        let bus = XenStoreBus(client: try unwrap(guest.client, "no xenstore client"))
        let how = try await transcript.wait(for: "reload=", seconds: 60)
        let md5: String
        do { md5 = try await transcript.wait(for: "reloaded md5=", seconds: 240) } catch {
            let states =
                "our backend \(String(describing: try? await bus.state(of: nodes.backendPath))), frontend "
                + "\(String(describing: try? await bus.state(of: nodes.frontendPath)))"
            throw CheckFailure("\(error) [\(states); \(transcript.report("reload-status ") ?? "no status")]")
        }
        try require(md5 == expectedMD5, "after reloading xen-blkfront the guest read md5 \(md5), want \(expectedMD5)")
        _ = try await transcript.wait(for: "done", seconds: 30)
        let state = try await bus.state(of: nodes.backendPath)
        try require(state == .connected, "our backend is \(String(describing: state)) after the reconnect")
        report.detail("driver reloaded by \(how); reconnected and read back at \(guest.elapsed())")
    }

    // MARK: - Destroy

    func destroy(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        try await ChildProcess.checked([GuestToolstack.xl, "destroy", "\(domain)"], seconds: 90)
        guest.domain = nil
        if let blockBack {
            // The frontend directory went with the domain: the serving loop ends normally.
            _ = try await within(60, "BlockBack to stop serving after the domain was destroyed") {
                try await blockBack.value
            }
        }
        for device in [ConsoleDevice.primary, .extra(DomUChecks.secondConsole)] {
            try await GuestToolstack.waitDetached(device, of: domain, consoles: guest.consoles)
        }
        let transcript = try guest.transcript
        try await within(30, "the primary console's pty to hang up") {
            while !transcript.ended { try await Task.sleep(for: .milliseconds(100)) }
        }
        if let daemon = guest.daemon {
            let served = await daemon.servedConsoles
            try require(served.isEmpty, "the daemon still serves \(served)")
        }
        if let nodes, let client = guest.client {
            let bus = XenStoreBus(client: client)
            try require(try await bus.state(of: nodes.backendPath) == .closed, "backend not Closed")
            try await nodes.destroy(in: bus)
        }
        // With every grant of the guest unmapped, Xen can free it: the domain leaves xl list entirely.
        try await GuestToolstack.waitUntilGone(domain)
        report.detail("destroyed and released at \(guest.elapsed())")
    }

    /// Best effort whatever failed: no domain, no daemon, no nodes left behind.
    func cleanUp() async {
        await guest.destroyDomain()
        blockBack?.cancel()
        await second?.close()
        if let nodes, let client = guest.client { try? await nodes.destroy(in: XenStoreBus(client: client)) }
        await guest.close()
        unlink(DomUChecks.diskPath)
        // Give the kernel's backend back to whatever runs after us.
        if Files.mode("/sys/module/xen_blkback") == nil {
            _ = try? await ChildProcess.run(["/bin/insmod", "/lib/modules/xen-blkback.ko"], seconds: 30)
        }
    }
}
