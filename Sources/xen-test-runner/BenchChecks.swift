#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `make xen-bench` (group `bench`, only when asked for by name: it is a benchmark, not a test): our backends
/// beside the ones users run today, on real Xen, with one table per boot.
///
/// **Block**: one PV guest (the `domu` group's kernel and busybox in its bench mode, scripts/xen/bench-init.sh)
/// with three disks over the same backing file in dom0's tmpfs, each served by another backend: xvda by QEMU's
/// qdisk (`backendtype=qdisk` in the guest's config: libxl starts the device model as it does for any PV guest
/// with a qdisk disk), xvdb by our ``BlockBack`` (file-backed; persistent grants, multi-page ring, indirect
/// segments, as it advertises by default; a backend class the kernel's blkback ignores), xvdc by the dom0
/// kernel's xen-blkback over a loop device. Inside the guest, one disk at a time, in turn per measurement:
/// sequential read and write with `O_DIRECT` (busybox dd, 1 MiB blocks) and 4 KiB random reads at queue depth
/// 1 and 16 (bench-randread.c, threads with pread). Rows compare ours with each peer; the ratio is ours / peer
/// (higher is better for ours). The figures are only comparable within one boot (TCG, a shared machine).
/// **Console** (``ConsoleBench``): guest output through our ConsoleDaemon and through xenconsoled. **XenStore**
/// (``XenStoreBench``): reads/s from dom0, XenStoreClient against libxenstore, over both transports.
/// XB_QUICK=1 (xt.bench.quick on dom0's command line) shortens every measurement.
enum BenchChecks {
    static let name = "swiftxen-bench"
    /// initramfs.sh's config (no disk); the runner writes `config` with the qdisk disk added.
    static let baseConfig = "/opt/domu/bench.cfg"
    static let config = "/tmp/bench.cfg"
    static let diskPath = "/tmp/bench-disk.img"
    static let diskBytes = 96 << 20
    /// guest-init.sh attaches loop0 for the block checks; the kernel's blkback gets its own.
    static let loopDevice = "/dev/loop1"
    /// Where libxl looks for QEMU (Debian's qemu-system-xen), staged by initramfs.sh when XT_QDISK=1.
    static let qemu = "/usr/libexec/xen-qemu-system-i386"
    /// Our vbd: not "vbd", so the dom0 kernel's xen-blkback leaves it to us.
    static let oursClass = "swiftxen-vbd"
    static let quick = getenv("XB_QUICK").map { String(cString: $0) } == "1"
    /// MiB per sequential pass and seconds per random-read run.
    static let sequentialMiB = quick ? 16 : 64
    static let randomSeconds = quick ? 2 : 5
    /// Block rounds: each figure in the table is the median of this many samples.
    static let rounds = quick ? 1 : 3

    /// The three backends: each a disk of the guest.
    static let backends: [BlockBackend] = [
        BlockBackend(name: "BlockBack", disk: "xvdb", device: 51728),
        BlockBackend(name: "xen-blkback", disk: "xvdc", device: 51744),
        BlockBackend(name: "qdisk", disk: "xvda", device: 51712),
    ]

    static func run(_ report: Report) async {
        let bench = BlockBench()
        await report.check(
            "bench: xl create -p; xvda on qdisk (libxl), xvdb on our BlockBack, xvdc on xen-blkback (loop)", limit: 240
        ) {
            try await bench.create(report)
        }
        await report.check("bench: the guest boots and sees its disks", limit: 300) {
            try await bench.boot(report)
        }
        await report.check(
            "bench: block: seq read/write \(sequentialMiB) MiB O_DIRECT, 4 KiB random reads QD1/QD16, each disk, "
                + "\(rounds) round(s)",
            limit: 1800
        ) {
            try await bench.measure(report)
        }
        await report.check(
            "bench: console: \(ConsoleBench.kib) KiB of guest output through our ConsoleDaemon", limit: 900
        ) {
            try await bench.console(report)
        }
        await report.check("bench: xl destroy; every backend lets go", limit: 180) {
            try await bench.destroy(report)
        }
        await bench.cleanUp()
        var peer: Double?
        var why: String?
        await report.check("bench: console: the same guest again, its console on xenconsoled", limit: 900) {
            do { peer = try await ConsoleBench.xenconsoled(report) } catch {
                why = "\(error)"
                throw error
            }
        }
        let console = BenchRow(label: ConsoleBench.label, ours: await bench.consoleRate, peer: peer, note: why)
        let xenstore = await XenStoreBench.run(report)
        printTable(await bench.results.rows() + [console] + xenstore, report: report)
    }

    /// One table: row, ours, peer, ratio; a row whose figures are missing says why.
    static func printTable(_ rows: [BenchRow], report: Report) {
        let prefix = "XT-BENCH \(report.prefix)"
        let mode = quick ? "quick (XB_QUICK=1)" : "full"
        report.line("\(prefix)== bench table (\(mode)): ratio = ours / peer, higher is better for ours ==")
        report.line(prefix + pad("row", 78) + pad("ours", 10, right: true) + pad("peer", 10, right: true) + "  ratio")
        for row in rows {
            let ratio = row.ours.flatMap { ours in row.peer.map { $0 > 0 ? fixed(ours / $0, 2) + "x" : "-" } }
            var line = prefix + pad(row.label, 78) + pad(row.ours.map { fixed($0, 1) } ?? "-", 10, right: true)
            line += pad(row.peer.map { fixed($0, 1) } ?? "-", 10, right: true) + "  " + (ratio ?? "-")
            if ratio == nil, let note = row.note { line += "  (\(note.prefix(160)))" }
            report.line(line)
        }
    }

    /// `value` with `digits` decimals (no Foundation in the runner).
    static func fixed(_ value: Double, _ digits: Int) -> String {
        var scale = 1
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int((value * Double(scale)).rounded())
        let fraction = String(abs(scaled) % scale)
        let whole = "\(scaled < 0 ? "-" : "")\(abs(scaled) / scale)"
        return digits == 0 ? whole : whole + "." + String(repeating: "0", count: digits - fraction.count) + fraction
    }

    static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - text.count))
        return right ? fill + text : text + fill
    }
}

/// One of the block backends compared: who serves it and which disk of the guest it is.
struct BlockBackend: Sendable {
    let name: String
    /// The guest's block device name.
    let disk: String
    /// Its xenstore vbd id (202 << 8 | minor).
    let device: UInt32
}

/// What the guest measures on each disk, and how its answer becomes a figure.
enum BlockMetric: CaseIterable, Sendable {
    case sequentialRead, sequentialWrite, randomQD1, randomQD16

    var label: String {
        let mib = BenchChecks.sequentialMiB
        switch self {
        case .sequentialRead: return "seq read \(mib) MiB O_DIRECT 1 MiB (MB/s)"
        case .sequentialWrite: return "seq write \(mib) MiB O_DIRECT 1 MiB (MB/s)"
        case .randomQD1: return "4 KiB random read QD1 (IOPS)"
        case .randomQD16: return "4 KiB random read QD16 (IOPS)"
        }
    }

    /// The guest's command for `disk` (scripts/xen/bench-init.sh).
    func command(_ disk: String) -> String {
        switch self {
        case .sequentialRead: return "read \(disk) \(BenchChecks.sequentialMiB)"
        case .sequentialWrite: return "write \(disk) \(BenchChecks.sequentialMiB)"
        case .randomQD1: return "rand \(disk) 1 \(BenchChecks.randomSeconds)"
        case .randomQD16: return "rand \(disk) 16 \(BenchChecks.randomSeconds)"
        }
    }

    /// MB/s (10^6 bytes) from dd's bytes and seconds, or the random reads' IOPS.
    func figure(_ answer: [String: String]) throws -> Double {
        switch self {
        case .sequentialRead, .sequentialWrite:
            let bytes = try unwrap(answer["bytes"].flatMap { Double($0) }, "no bytes= in \(answer)")
            let seconds = try unwrap(answer["seconds"].flatMap { Double($0) }, "no seconds= in \(answer)")
            try require(seconds > 0 && bytes == Double(BenchChecks.sequentialMiB << 20), "dd moved \(answer)")
            return bytes / seconds / 1e6
        case .randomQD1, .randomQD16:
            let iops = try unwrap(answer["iops"].flatMap { Double($0) }, "no iops= in \(answer)")
            let ios = try unwrap(answer["ios"].flatMap { Int($0) }, "no ios= in \(answer)")
            try require(ios > 0, "no read completed: \(answer)")
            return iops
        }
    }
}

/// The block figures of one boot: per metric, per backend name; and why a backend has none.
struct BlockResults: Sendable {
    var values: [BlockMetric: [String: Double]] = [:]
    var missing: [String: String] = [:]

    /// Ours against each peer, metric by metric.
    func rows() -> [BenchRow] {
        let ours = BenchChecks.backends[0]
        return BenchChecks.backends.dropFirst().flatMap { peer in
            BlockMetric.allCases.map { metric in
                BenchRow(
                    label: "block \(metric.label) \(ours.name) vs \(peer.name)",
                    ours: values[metric]?[ours.name], peer: values[metric]?[peer.name],
                    note: missing[peer.name] ?? missing[ours.name] ?? "not measured (see the FAIL line above)")
            }
        }
    }
}

/// One line of the table: our figure, the peer's, and why one is missing.
struct BenchRow: Sendable {
    let label: String
    let ours: Double?
    let peer: Double?
    let note: String?
}
