// `make bench` nbd-server group: SwiftXen's NBDServer (`swiftxen nbd serve`) against `nbdkit file` and
// `qemu-nbd`, each a process of its own serving the same 1 GiB file (page-cached) on unix sockets, read by
// `nbdcopy … null:` and fio's nbd engine (4 KiB random reads at QD1 and QD16); then `swiftxen nbd copy` against `nbdcopy` on the same endpoints. Rounds
// alternate between the sides so a noisy neighbour hits all of them; figures are medians over the rounds
// and ratios are taken per round, then their median (NBD_BENCH_ROUNDS, default 5).
import Foundation
import XenCore

enum NBDServerBench {
    static let size = 1 << 30

    static func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbdserverbench-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let disk = directory.appendingPathComponent("disk.img").path
        let sparse = directory.appendingPathComponent("sparse.img").path
        try write(disk, dataEvery: 1)  // all data
        try write(sparse, dataEvery: 4)  // a quarter data: 8 MiB islands 32 MiB apart
        let rounds = Int(ProcessInfo.processInfo.environment["NBD_BENCH_ROUNDS"] ?? "") ?? 5

        // The CLI as `make bench` builds it (SWIFTXEN_CLI: the Swift runtime linked in, as a deployed tool is
        // built), else the one beside this binary.
        let binary =
            ProcessInfo.processInfo.environment["SWIFTXEN_CLI"]
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("swiftxen").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw NBDBench.BenchError.parse("\(binary) not built (make bench builds it)")
        }
        // Every server is a process of its own, started the way its users start it.
        let ours = directory.appendingPathComponent("ours.sock").path
        let nbdkit = directory.appendingPathComponent("nbdkit.sock").path
        let qemu = directory.appendingPathComponent("qemu.sock").path
        let peers = [
            try spawn(binary, ["nbd", "serve", disk, "--socket", ours], socket: ours),
            try spawn(
                "/usr/bin/nbdkit", ["--foreground", "--exit-with-parent", "-U", nbdkit, "file", disk], socket: nbdkit),
            try spawn("/usr/bin/qemu-nbd", ["-k", qemu, "-f", "raw", "-e", "8", "-t", disk], socket: qemu),
        ]
        defer { for peer in peers { stop(peer) } }
        let servers = [("SwiftXen", ours), ("nbdkit file", nbdkit), ("qemu-nbd", qemu)].map {
            (name: $0.0, uri: "nbd+unix:///?socket=\($0.1)")
        }

        // Each server's own CPU time is read around every run: on a loaded shared machine wall-clock figures
        // swing with the scheduler, CPU seconds per unit of work much less.
        let pids = peers.map(\.processIdentifier)
        // Sequential: nbdcopy's defaults (its connections and 64 requests of 256 KiB each) to null:.
        var sequential = [[Double]](repeating: [], count: servers.count)
        var sequentialCPU = [[Double]](repeating: [], count: servers.count)
        for _ in 0..<rounds {
            for (index, server) in servers.enumerated() {
                let before = cpuSeconds(pids[index])
                let seconds = try NBDBench.timed { try NBDBench.tool("/usr/bin/nbdcopy", [server.uri, "null:"]) }
                sequentialCPU[index].append(cpuSeconds(pids[index]) - before)
                sequential[index].append(Double(size) / 1_048_576 / seconds)
            }
        }
        row("nbdcopy → null: (1 GiB)", servers.map(\.name), sequential, unit: "MiB/s")
        cpuRow("   server CPU per GiB read", servers.map(\.name), sequentialCPU, scale: 1000, unit: "ms")
        for depth in [1, 16] {
            var iops = [[Double]](repeating: [], count: servers.count)
            var perRead = [[Double]](repeating: [], count: servers.count)
            for _ in 0..<rounds {
                for (index, server) in servers.enumerated() {
                    let before = cpuSeconds(pids[index])
                    let rate = try NBDBench.fio(uri: server.uri, depth: depth, seconds: 1.5)
                    perRead[index].append((cpuSeconds(pids[index]) - before) / (rate * 1.5))
                    iops[index].append(rate)
                }
            }
            row("fio 4 KiB random read QD\(depth)", servers.map(\.name), iops, unit: "IOPS")
            cpuRow("   server CPU per read", servers.map(\.name), perRead, scale: 1e6, unit: "µs")
        }
        try await copies(binary, directory: directory, disk: disk, sparse: sparse, nbdkit: nbdkit, rounds: rounds)
    }

    /// `swiftxen nbd copy` against `nbdcopy`, both whole processes, on nbdkit endpoints.
    static func copies(
        _ binary: String, directory: URL, disk: String, sparse: String, nbdkit: String, rounds: Int
    ) async throws {
        let sparseSocket = directory.appendingPathComponent("sparse.sock").path
        let memory = directory.appendingPathComponent("memory.sock").path
        let peers = [
            try spawn(
                "/usr/bin/nbdkit", ["--foreground", "--exit-with-parent", "-U", sparseSocket, "file", sparse],
                socket: sparseSocket),
            try spawn(
                "/usr/bin/nbdkit", ["--foreground", "--exit-with-parent", "-U", memory, "memory", "1G"], socket: memory),
        ]
        defer { for peer in peers { stop(peer) } }
        let source = "nbd+unix:///?socket=\(nbdkit)"
        let destination = "nbd+unix:///?socket=\(memory)"
        let output = directory.appendingPathComponent("out.img").path
        let cases: [(name: String, arguments: [String])] = [
            ("NBD → null:", [source, "null:"]),
            ("NBD → file", [source, output]),
            ("file → NBD", [disk, destination]),
            ("NBD → NBD, sparse (1/4 data)", ["nbd+unix:///?socket=\(sparseSocket)", destination]),
        ]
        for copy in cases {
            var runs: [[Double]] = [[], []]
            // One untimed run first, so that every timed run finds the destination as a copy leaves it (the
            // first sparse copy after `file → NBD` zeroes 768 MiB of data the others find zeroed already);
            // the sides then alternate which goes first.
            try? FileManager.default.removeItem(atPath: output)
            _ = try NBDBench.tool("/usr/bin/nbdcopy", copy.arguments)
            for round in 0..<rounds {
                // Each run starts with no output file and no dirty pages left by the previous one.
                let sides = [(0, binary), (1, "/usr/bin/nbdcopy")]
                for (side, tool) in round % 2 == 0 ? sides : sides.reversed() {
                    try? FileManager.default.removeItem(atPath: output)
                    sync()
                    let arguments = side == 0 ? ["nbd", "copy"] + copy.arguments : copy.arguments
                    let seconds = try NBDBench.timed { try NBDBench.tool(tool, arguments) }
                    runs[side].append(Double(size) / 1_048_576 / seconds)
                }
            }
            row("copy \(copy.name)", ["swiftxen nbd copy", "nbdcopy"], runs, unit: "MiB/s")
        }
    }

    /// One line per measurement: each side's median over the rounds, and the median over the rounds of
    /// our figure divided by the better peer's in the same round (paired, so a noisy stretch of the shared
    /// machine hits both sides of a ratio), with the range of those ratios.
    static func row(_ name: String, _ names: [String], _ runs: [[Double]], unit: String) {
        let sides = zip(names, runs).map { "\($0.0) \(Int(median($0.1)))" }.joined(separator: ", ")
        let ratios = runs[0].indices.map { round in runs[0][round] / (runs.dropFirst().map { $0[round] }.max() ?? 1) }
        print(
            "   \(name): \(sides) \(unit) (medians of \(runs[0].count)); ratio to the better peer: median "
                + String(format: "%.2fx (%.2f–%.2f)", median(ratios), ratios.min() ?? 0, ratios.max() ?? 0))
    }

    /// Medians of a per-run CPU cost, and ours over the cheaper peer's (below 1: less CPU for the same work).
    static func cpuRow(_ name: String, _ names: [String], _ runs: [[Double]], scale: Double, unit: String) {
        let medians = runs.map { median($0) * scale }
        let sides = zip(names, medians).map { "\($0.0) " + String(format: "%.1f", $0.1) }.joined(separator: ", ")
        let cheaper = medians.dropFirst().min() ?? 1
        print("\(name): \(sides) \(unit); ours / the cheaper peer " + String(format: "%.2fx", medians[0] / cheaper))
    }

    /// CPU seconds (user + system) used so far by the process `pid`.
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let end = text.lastIndex(of: ")")
        else { return 0 }
        // Fields after the command name: state is field 3, utime 14 and stime 15.
        let fields = text[text.index(after: end)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// A 1 GiB file of pseudo-random data in 8 MiB islands, one island in `dataEvery` (the rest holes).
    static func write(_ path: String, dataEvery: Int) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0, ftruncate(fd, off_t(size)) == 0 else { throw NBDBench.BenchError.parse("cannot create \(path)") }
        defer { close(fd) }
        var generator = SplitMix64(seed: 42)
        let island = 8 << 20
        var words = [UInt64](repeating: 0, count: island / 8)
        for index in stride(from: 0, to: size / island, by: dataEvery) {
            for word in words.indices { words[word] = generator.next() }
            let written = words.withUnsafeBytes { pwrite(fd, $0.baseAddress, island, off_t(index * island)) }
            guard written == island else { throw NBDBench.BenchError.parse("short write to \(path)") }
        }
    }

    static func spawn(_ path: String, _ arguments: [String], socket: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: socket) { usleep(10_000) }
        usleep(50_000)
        return process
    }

    static func stop(_ process: Process) {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
