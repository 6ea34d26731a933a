// `make bench` NBD group: SwiftXen's NBDClient against nbdcopy (sequential) and fio's nbd engine (random
// 4 KiB reads), all against one `nbdkit memory 1G` on a unix socket, in one run.
import Foundation
import NBDClient
import XenCore

enum NBDBench {
    static let size: UInt64 = 1 << 30
    static let requestSize = 256 << 10

    static func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbdbench-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("nbd.sock").path
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/nbdkit")
        server.arguments = ["--foreground", "--exit-with-parent", "--unix", socket, "memory", "1G"]
        try server.run()
        defer {
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        let uri = "nbd+unix:///?socket=\(socket)"
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: socket) { usleep(10_000) }
        usleep(50_000)

        // NBD_BENCH_QUICK=1: only the random-read part (on the filled export), for profiling.
        let quick = ProcessInfo.processInfo.environment["NBD_BENCH_QUICK"] != nil
        // Fill the export with data so nobody can skip holes.
        let filler = try await NBDClient.connect(uri: uri, options: NBDClientOptions(connections: 4))
        try await parallel(filler, workers: 64) { offset, buffer in try await filler.write(at: offset, from: [buffer]) }
        await filler.disconnect()

        // Sequential read of 1 GiB with nbdcopy's default parallelism: min(4, cores) connections (nbdcopy
        // caps connections at its thread count, one thread per core), 64 × 256 KiB in flight on each, each
        // connection driven by one thread. `NBD_BENCH_CONNECTIONS` overrides the connection count.
        // Runs alternate between the two sides (best of five each) so a noisy neighbour hits both.
        let connections =
            ProcessInfo.processInfo.environment["NBD_BENCH_CONNECTIONS"].flatMap { Int($0) }
            ?? min(4, ProcessInfo.processInfo.activeProcessorCount)
        var ours = 0.0
        var theirs = 0.0
        for _ in 0..<(quick ? 0 : 5) {
            let client = try await NBDClient.connect(uri: uri, options: NBDClientOptions(connections: connections))
            let seconds = try await timed {
                try await parallel(client, workers: 64 * connections) { offset, buffer in
                    try await client.read(at: offset, into: [buffer])
                }
            }
            await client.disconnect()
            ours = max(ours, Double(size) / 1_048_576 / seconds)
            let copy = try timed { try tool("/usr/bin/nbdcopy", [uri, "null:"]) }
            theirs = max(theirs, Double(size) / 1_048_576 / copy)
        }
        if !quick { report("sequential read 1 GiB", ours: ours, theirs: theirs, peer: "nbdcopy", unit: "MiB/s") }

        // Random 4 KiB reads at queue depth 1 and 16, one connection each side, alternating 1.5 s runs, best
        // of five (the machine is shared: short alternating runs give both sides the same quiet moments).
        for depth in [1, 16] {
            var ourIOPS = 0.0
            var fioIOPS = 0.0
            for _ in 0..<5 {
                let client = try await NBDClient.connect(uri: uri)
                ourIOPS = max(ourIOPS, try await randomReads(client, depth: depth, seconds: 1.5))
                await client.disconnect()
                fioIOPS = max(fioIOPS, try fio(uri: uri, depth: depth, seconds: 1.5))
            }
            report("4 KiB random read QD\(depth)", ours: ourIOPS, theirs: fioIOPS, peer: "fio nbd", unit: "IOPS")
        }
    }

    static func report(_ name: String, ours: Double, theirs: Double, peer: String, unit: String) {
        let line =
            "   \(name): SwiftXen \(Int(ours)) \(unit), \(peer) \(Int(theirs)) \(unit), ratio "
            + String(format: "%.2fx", ours / theirs)
        print(line)
    }

    /// Reads or writes the whole export in 256 KiB pieces with `workers` requests in flight.
    static func parallel(
        _ client: NBDClient, workers: Int, _ body: @escaping @Sendable (UInt64, PageBuffer) async throws -> Void
    ) async throws {
        let pieces = Int(size) / requestSize
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<workers {
                // Each worker runs on one connection's I/O thread (nil under TLS: the global pool), as each
                // nbdcopy worker thread drives one connection.
                let executor = client.taskExecutor(connection: worker % client.connectionCount)
                group.addTask(executorPreference: executor) {
                    let buffer = PageBuffer(pages: requestSize / 4096)
                    buffer.fill(UInt8(truncatingIfNeeded: worker | 1))
                    var piece = worker
                    while piece < pieces {
                        try await body(UInt64(piece * requestSize), buffer)
                        piece += workers
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    static func randomReads(_ client: NBDClient, depth: Int, seconds: Double) async throws -> Double {
        try await RandomReader.run(client, depth: depth, seconds: seconds)
    }

    static func fio(uri: String, depth: Int, seconds: Double) throws -> Double {
        let output = try tool(
            "/usr/bin/fio",
            [
                "--name=nbd", "--ioengine=nbd", "--uri=\(uri)", "--rw=randread", "--bs=4k", "--iodepth=\(depth)",
                "--size=1G", "--time_based", "--runtime=\(Int(seconds * 1000))ms", "--output-format=json",
            ])
        // fio prints "fio: connected to NBD server" before the JSON document.
        let start = output.firstIndex(of: UInt8(ascii: "{")) ?? output.startIndex
        guard let json = try JSONSerialization.jsonObject(with: output[start...]) as? [String: Any],
            let jobs = json["jobs"] as? [[String: Any]], let read = jobs.first?["read"] as? [String: Any],
            let iops = read["iops"] as? Double
        else { throw BenchError.parse("fio output") }
        return iops
    }

    enum BenchError: Error { case tool(String, Int32), parse(String) }

    @discardableResult
    static func tool(_ path: String, _ arguments: [String]) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw BenchError.tool(path, process.terminationStatus) }
        return data
    }

    static func timed(_ body: () async throws -> Void) async rethrows -> Double {
        let start = ContinuousClock.now
        try await body()
        return (ContinuousClock.now - start).inSeconds
    }

    static func timed(_ body: () throws -> Void) rethrows -> Double {
        let start = ContinuousClock.now
        try body()
        return (ContinuousClock.now - start).inSeconds
    }
}

/// Runs the random-read workers on the connection's I/O thread (like fio's single thread driving libnbd):
/// each worker prefers the connection's task executor, so submitting and completing a request never
/// crosses threads (under TLS there is no such thread and the workers run on the global pool).
enum RandomReader {
    static func run(_ client: NBDClient, depth: Int, seconds: Double) async throws -> Double {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let start = ContinuousClock.now
        let blocks = NBDBench.size / 4096
        var total = 0
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<depth {
                group.addTask(executorPreference: client.taskExecutor(connection: 0)) {
                    try await worker(client, until: deadline, blocks: blocks)
                }
            }
            while let count = try await group.next() { total += count }
        }
        return Double(total) / (ContinuousClock.now - start).inSeconds
    }

    /// One queue slot: synchronous-looking reads.
    private static func worker(_ client: NBDClient, until deadline: ContinuousClock.Instant, blocks: UInt64)
        async throws -> Int
    {
        var generator = SystemRandomNumberGenerator()
        let buffer = PageBuffer(pages: 1)
        var count = 0
        while ContinuousClock.now < deadline {
            for _ in 0..<64 {
                let block = UInt64.random(in: 0..<blocks, using: &generator)
                try await client.read(at: block * 4096, into: [buffer])
            }
            count += 64
        }
        return count
    }
}
