import BlockBack
import EventChannel
import GrantTable
import XenCore
import XenStoreClient
import Xenbus

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The `bench` group's guest and its three block backends, carried from check to check (see ``BenchChecks``).
actor BlockBench {
    var guest = GuestSession()
    var ours: VirtualBlockDeviceNodes?
    var kernel: VirtualBlockDeviceNodes?
    var serving: Task<Int, any Error>?
    /// The backends the guest has a disk of (qdisk only when QEMU is staged).
    var measured: [BlockBackend] = []
    var results = BlockResults()
    /// The console row's figure for our ConsoleDaemon (kB/s).
    var consoleRate: Double?
    var asked = 0

    // MARK: - Create and boot

    func create(_ report: Report) async throws {
        try writeDisk()
        try await ChildProcess.checked(["/bin/losetup", BenchChecks.loopDevice, BenchChecks.diskPath], seconds: 30)
        if Files.mode("/sys/module/xen_blkback") == nil {
            try await ChildProcess.checked(["/bin/insmod", "/lib/modules/xen-blkback.ko"], seconds: 30)
        }
        let base = try unwrap(Files.read(BenchChecks.baseConfig), "cannot read \(BenchChecks.baseConfig)")
        let qdisk = BenchChecks.backends.first { $0.name == "qdisk" }!
        var config = base
        if Files.mode(BenchChecks.qemu) != nil {
            // What a user writes for a qdisk disk; libxl then starts QEMU for this PV guest.
            config += "disk = [ \"format=raw, vdev=\(qdisk.disk), access=rw, backendtype=qdisk, "
            config += "target=\(BenchChecks.diskPath)\" ]\n"
        } else {
            results.missing[qdisk.name] = "QEMU not staged: make xen-bench stages it (XT_QDISK=1)"
        }
        try require(Files.write(BenchChecks.config, config, create: true), errnoText("write \(BenchChecks.config)"))
        do {
            guest = try await GuestToolstack.start(config: BenchChecks.config, name: BenchChecks.name)
        } catch {
            let log = Files.read("/var/log/xen/qemu-dm-\(BenchChecks.name).log") ?? "no device-model log"
            throw CheckFailure(
                "\(error); device model log: \(log.split(separator: "\n").suffix(12).joined(separator: " | "))")
        }
        let domain = try unwrap(guest.domain, "no domain")
        let client = try unwrap(guest.client, "no xenstore client")
        let bus = XenStoreBus(client: client)
        let oursBackend = BenchChecks.backends[0]
        let kernelBackend = BenchChecks.backends[1]
        let ours = VirtualBlockDeviceNodes(
            backendDomain: .dom0, frontendDomain: domain, deviceID: oursBackend.device,
            backendClass: BenchChecks.oursClass)
        let kernel = VirtualBlockDeviceNodes(
            backendDomain: .dom0, frontendDomain: domain, deviceID: kernelBackend.device)
        for nodes in [ours, kernel] {
            try await nodes.destroy(in: bus)
            try await nodes.create(in: bus)
        }
        self.ours = ours
        self.kernel = kernel
        // The block hotplug script's part for the kernel's backend: the loop device's numbers, in hex.
        let numbers = try unwrap(Files.trimmed("/sys/block/loop1/dev"), "no /sys/block/loop1/dev")
            .split(separator: ":").compactMap { Int($0) }
        try require(numbers.count == 2, "odd /sys/block/loop1/dev")
        try await bus.write([
            (kernel.backendPath + "/type", "phy"), (kernel.backendPath + "/params", BenchChecks.loopDevice),
            (kernel.backendPath + "/dev", kernelBackend.disk),
            (
                kernel.backendPath + "/physical-device",
                String(numbers[0], radix: 16) + ":" + String(numbers[1], radix: 16)
            ),
        ])
        serving = try GuestToolstack.serveFile(
            BenchChecks.diskPath, nodes: ours, client: client,
            grants: GuardedGrantTable.wrap(try XenGrantTable(), label: "bench"), events: try XenEventChannel())
        measured = BenchChecks.backends.filter { results.missing[$0.name] == nil }
        let model = DomUChecks.processes(named: "xen-qemu-system")
        report.detail(
            "domid \(domain) created in \(guest.elapsed()); disks: "
                + measured.map { "\($0.disk) on \($0.name)" }.joined(separator: ", ")
                + "; QEMU device model pids \(model)")
    }

    /// The backing file, every byte written (tmpfs allocates it all): 8-byte words naming their own offsets.
    private func writeDisk() throws {
        let fd = open(BenchChecks.diskPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        try require(fd >= 0, errnoText("open \(BenchChecks.diskPath)"))
        defer { close(fd) }
        let chunk = 1 << 20
        var words = [UInt64](repeating: 0, count: chunk / 8)
        for base in stride(from: 0, to: BenchChecks.diskBytes, by: chunk) {
            for index in words.indices { words[index] = 0x5842_454E_0000_0000 | UInt64(base + index * 8) }
            let written = words.withUnsafeBytes { pwrite(fd, $0.baseAddress, chunk, off_t(base)) }
            try require(written == chunk, errnoText("pwrite \(BenchChecks.diskPath)"))
        }
    }

    func boot(_ report: Report) async throws {
        let client = try unwrap(guest.client, "no xenstore client")
        let (session, reader, tty) = try await guest.openPrimary()
        guest.primary = reader
        try await guest.unpause()
        // The disks appear as each frontend connects: ask until every one is there with the file's size.
        let want = Dictionary(uniqueKeysWithValues: measured.map { ($0.disk, "\(BenchChecks.diskBytes)") })
        var seen: [String: String] = [:]
        for _ in 0..<90 {
            seen = DomUNetChecks.fields(try await ask("disks", seconds: 60))
            if want.allSatisfy({ seen[$0.key] == $0.value }) { break }
            try await Task.sleep(for: .seconds(1))
        }
        try require(want.allSatisfy { seen[$0.key] == $0.value }, "the guest has disks \(seen), want \(want)")
        let keys = try await XenStoreBus(client: client).readKeys(
            ["multi-queue-num-queues", "ring-page-order", "feature-persistent"],
            in: try unwrap(ours, "no vbd nodes").frontendPath)
        report.detail(
            "\(session.id) on \(tty); disks \(seen.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }) at "
                + "\(guest.elapsed()); blkfront with our backend: \(keys.sorted { $0.key < $1.key })")
    }

    /// Types one command on the guest's console with a fresh id; the answer's text, or a failure.
    func ask(_ command: String, seconds: Int) async throws -> String {
        asked += 1
        let answer = try await guest.ask("b\(asked)", command, seconds: seconds)
        try require(!answer.hasPrefix("failed"), "the guest's \"\(command)\": \(answer)")
        return answer
    }

    // MARK: - Measure

    /// Every metric on every disk, `BenchChecks.rounds` times: within a round the disks take turns per metric,
    /// and each round starts with the next disk (so that a slow spell of the shared host spreads over all of
    /// them). The table has each figure's median; the details every sample, and the median dom0 CPU time per
    /// MiB (sequential) or per read (random) over the same interval: every dom0 CPU's busy time in
    /// /proc/stat, whoever spent it (our runner, the kernel's blkback and loop threads, QEMU, and what runs
    /// anyway: xenstored, the runner's console reader). A failed measurement fails the check after the others
    /// ran.
    func measure(_ report: Report) async throws {
        _ = try unwrap(guest.primary, "the guest never booted")
        var failures: [String] = []
        var samples: [BlockMetric: [String: [Double]]] = [:]
        var cpu: [BlockMetric: [String: [Double]]] = [:]
        for round in 0..<BenchChecks.rounds {
            let first = round % measured.count
            let order = Array(measured[first...] + measured[..<first])
            for metric in BlockMetric.allCases {
                for backend in order {
                    do {
                        let busy = Self.dom0BusySeconds()
                        let answer = DomUNetChecks.fields(try await ask(metric.command(backend.disk), seconds: 600))
                        let spent = Self.dom0BusySeconds() - busy
                        let figure = try metric.figure(answer)
                        samples[metric, default: [:]][backend.name, default: []].append(figure)
                        let units = Double(answer["ios"] ?? "") ?? Double(BenchChecks.sequentialMiB)
                        cpu[metric, default: [:]][backend.name, default: []].append(spent * 1000 / units)
                    } catch {
                        failures.append("\(backend.name) \(metric.label): \(error)")
                    }
                }
            }
        }
        for (metric, byBackend) in samples {
            for (name, figures) in byBackend {
                results.values[metric, default: [:]][name] = figures.sorted()[figures.count / 2]
            }
        }
        try require(failures.isEmpty, failures.joined(separator: "; "))
        let spread = BlockMetric.allCases.map { metric in
            "\(metric.label): "
                + measured.map { backend in
                    "\(backend.name) "
                        + (samples[metric]?[backend.name] ?? []).map { BenchChecks.fixed($0, 1) }.joined(separator: "/")
                }.joined(separator: ", ")
        }
        let costs = BlockMetric.allCases.map { metric in
            "\(metric.label): "
                + measured.map { backend in
                    let spent = (cpu[metric]?[backend.name] ?? []).sorted()
                    return "\(backend.name) " + (spent.isEmpty ? "-" : BenchChecks.fixed(spent[spent.count / 2], 1))
                }.joined(separator: ", ")
        }
        report.detail(
            "\(asked) commands by \(guest.elapsed()); samples: \(spread.joined(separator: "; ")); dom0 CPU ms per "
                + "MiB (seq) or per read (random), medians: \(costs.joined(separator: "; "))")
    }

    /// Seconds every dom0 CPU was busy since boot (user, nice, system, irq, softirq of /proc/stat's `cpu` line,
    /// in USER_HZ = 100 ticks); 0 when it cannot be read.
    static func dom0BusySeconds() -> Double {
        guard let first = Files.read("/proc/stat")?.split(separator: "\n").first else { return 0 }
        let ticks = first.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard ticks.count >= 7 else { return 0 }
        return (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / 100
    }

    /// ``ConsoleBench``'s measurement on this guest, whose console is ours.
    func console(_ report: Report) async throws {
        _ = try unwrap(guest.primary, "the guest never booted")
        let busy = Self.dom0BusySeconds()
        let answer = try await ask("console \(ConsoleBench.kib)", seconds: 900)
        let cost = ConsoleBench.dom0Cost(since: busy)
        consoleRate = try ConsoleBench.figure(answer)
        report.detail("\(answer) at \(guest.elapsed()); \(cost)")
    }

    // MARK: - Destroy

    func destroy(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        try await ChildProcess.checked([GuestToolstack.xl, "destroy", "\(domain)"], seconds: 90)
        guest.domain = nil
        if let serving {
            _ = try await within(60, "BlockBack to stop serving after the domain was destroyed") {
                try await serving.value
            }
        }
        let bus = XenStoreBus(client: try unwrap(guest.client, "no xenstore client"))
        for nodes in [ours, kernel].compactMap({ $0 }) { try await nodes.destroy(in: bus) }
        try await GuestToolstack.waitUntilGone(domain)
        let model = DomUChecks.processes(named: "xen-qemu-system")
        try require(model.isEmpty, "QEMU's device model still runs (pids \(model))")
        report.detail("destroyed and released at \(guest.elapsed())")
    }

    /// Best effort whatever failed: no domain, no nodes, no loop device, no file left behind.
    func cleanUp() async {
        await guest.destroyDomain()
        serving?.cancel()
        if let client = guest.client {
            for nodes in [ours, kernel].compactMap({ $0 }) { try? await nodes.destroy(in: XenStoreBus(client: client)) }
        }
        await guest.close()
        _ = try? await ChildProcess.run(["/bin/losetup", "-d", BenchChecks.loopDevice], seconds: 30)
        unlink(BenchChecks.diskPath)
        unlink(BenchChecks.config)
    }
}
