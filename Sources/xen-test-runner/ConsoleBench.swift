import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The `bench` group's Console row: `kib` KiB of guest output (text lines written to its primary console,
/// /dev/hvc0) drained into the console's pty, timed by the guest (its write returns once the backend took all
/// but the last ring-full). Ours is measured on the block guest, whose console our ConsoleDaemon serves; the
/// peer on a second boot of the same guest (no disks) whose console xenconsoled serves, started by this group
/// and stopped again. Both ptys are read the same way (``PtyReader``, as `xl console` would). Only the guest →
/// dom0 direction: the input direction carries what a user types, and xenconsoled gives no way to time it from
/// inside the guest that is not dominated by the guest's tty.
enum ConsoleBench {
    static let kib = BenchChecks.quick ? 256 : 1024
    static let pidFile = "/run/xen/xenconsoled-bench.pid"

    static var label: String {
        "console \(kib) KiB guest output drained to the pty (kB/s) ConsoleDaemon vs xenconsoled"
    }

    /// kB/s (10^3 bytes) from the guest's answer to `console`.
    static func figure(_ answer: String) throws -> Double {
        let fields = DomUNetChecks.fields(answer)
        let bytes = try unwrap(fields["bytes"].flatMap { Double($0) }, "no bytes= in \(answer)")
        let seconds = try unwrap(fields["seconds"].flatMap { Double($0) }, "no seconds= in \(answer)")
        try require(bytes == Double(kib * 1024) && seconds > 0, "the guest wrote \(answer)")
        return bytes / seconds / 1e3
    }

    /// dom0's CPU time (every CPU's busy time, whoever spent it: the console daemon, the runner reading the
    /// pty, the kernel) since `busy` seconds, per KiB of the run's output.
    static func dom0Cost(since busy: Double) -> String {
        "dom0 CPU " + BenchChecks.fixed((BlockBench.dom0BusySeconds() - busy) * 1000 / Double(kib), 2) + " ms per KiB"
    }

    /// The peer's figure: a guest on xenconsoled, created, measured and destroyed.
    static func xenconsoled(_ report: Report) async throws -> Double {
        try await ChildProcess.checked(["/usr/sbin/xen-init-dom0"], seconds: 60)
        try require(DomUChecks.processes(named: "xenconsoled").isEmpty, "a xenconsoled is already running")
        try await ChildProcess.checked(["/usr/sbin/xenconsoled", "--pid-file=\(pidFile)"], seconds: 30)
        var guest = GuestSession()
        do {
            guest.client = try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
            let client = try unwrap(guest.client, "no xenstore client")
            let domain = try await GuestToolstack.createPaused(config: BenchChecks.baseConfig, name: BenchChecks.name)
            guest.domain = domain
            // libxl's create returned once xenconsoled published the pty.
            let tty = try await client.immediate { handle in
                try await handle.read("/local/domain/\(domain)/console/tty")
            }
            guest.primary = try PtyReader(path: tty, marker: "XT-DOMU")
            try await guest.unpause()
            let busy = BlockBench.dom0BusySeconds()
            let answer = try await guest.ask("x1", "console \(kib)", seconds: 900)
            let cost = dom0Cost(since: busy)
            let rate = try figure(answer)
            try await ChildProcess.checked([GuestToolstack.xl, "destroy", "\(domain)"], seconds: 90)
            guest.domain = nil
            try await GuestToolstack.waitUntilGone(domain)
            report.detail("domid \(domain), xenconsoled's pty \(tty): \(answer) at \(guest.elapsed()); \(cost)")
            await stop(guest)
            return rate
        } catch {
            await stop(guest)
            throw error
        }
    }

    /// Destroys the guest if it is still there, closes its pty and connection, and stops our xenconsoled by its
    /// pid.
    static func stop(_ guest: GuestSession) async {
        await guest.destroyDomain()
        await guest.close()
        if let pid = Files.trimmed(pidFile).flatMap({ Int32($0) }), pid > 1 {
            kill(pid, SIGTERM)
            for _ in 0..<50 where kill(pid, 0) == 0 { try? await Task.sleep(for: .milliseconds(100)) }
        }
        unlink(pidFile)
    }
}
