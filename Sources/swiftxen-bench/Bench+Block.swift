import BlockBack
import BlockDevice
import BlockFront
import Glibc
import XenCore
import XenTestSupport

/// Block: BlockFront ↔ BlockBack on the simulated hypervisor over a RAM-backed device, against a plain memcpy
/// of the same bytes. 4 KiB random reads at queue depth 32 (IOPS) and 1 MiB sequential reads (MB/s).
enum BlockBench {
    static func run() async throws {
        let host = SimulatedHost()
        let vbd = SimulatedVbd(host: host, guest: try host.createGuest(name: "bench"))
        let nodes = vbd.nodes
        let backStore = host.dom0Bus
        let deviceBytes = 64 << 20
        let device = MemoryBlockDevice(sizeSectors: UInt64(deviceBytes / 512))
        let serving = try await vbd.serve(device)
        let front = try await vbd.connectFront()
        let negotiated = front.negotiated
        print(
            "   negotiated: \(negotiated.ringPages)-page ring, \(negotiated.queues) queue(s), "
                + "\(negotiated.segmentsPerRequest) segments/request, persistent grants \(negotiated.persistentGrants)")

        // The machine may be shared: each figure is the best of several rounds, for us and for memcpy alike, in
        // wall-clock time and in process CPU time (which other processes' load does not inflate).
        let rounds = 5

        // 4 KiB random reads, queue depth 32.
        let depth = 32
        let perTask = 400
        let ops = Double(depth * perTask)
        let sectors = UInt64(deviceBytes / 512)
        try await randomReads(front, depth: 4, perTask: 100, sectors: sectors)  // warm-up (grants, caches)
        var random = Timing.worst
        for _ in 0..<rounds {
            random = random.best(
                try await Timing.measure {
                    try await randomReads(front, depth: depth, perTask: perTask, sectors: sectors)
                })
        }
        let source = PageBuffer(pages: deviceBytes / 4096)
        let target = PageBuffer(pages: 1)
        var generator = SplitMix64(seed: 7)
        var memcpyRandom = Timing.worst
        for _ in 0..<rounds {
            memcpyRandom = memcpyRandom.best(
                Timing.measureSync {
                    for _ in 0..<(depth * perTask) {
                        let page = Int.random(in: 0..<(deviceBytes / 4096), using: &generator)
                        memcpy(target.pointer, source.pointer + page * 4096, 4096)
                    }
                })
        }
        print(
            "   4 KiB random read, QD\(depth): \(format(ops / random.wall)) IOPS vs memcpy "
                + "\(format(ops / memcpyRandom.wall)) /s (\(ratio(memcpyRandom.wall, random.wall))x); per CPU-second "
                + "\(format(ops / random.cpu)) vs \(format(ops / memcpyRandom.cpu)) "
                + "(\(ratio(memcpyRandom.cpu, random.cpu))x)")

        // 1 MiB sequential reads over the whole 64 MiB device.
        let chunk = 1 << 20
        let buffer = PageBuffer(pages: chunk / 4096)
        let reads = deviceBytes / chunk
        let megabytes = Double(reads * chunk) / 1e6
        try await front.read(at: 0, into: [buffer])
        var sequential = Timing.worst
        for _ in 0..<rounds {
            sequential = sequential.best(
                try await Timing.measure {
                    for index in 0..<reads { try await front.read(at: UInt64(index * chunk / 512), into: [buffer]) }
                })
        }
        var memcpySequential = Timing.worst
        for _ in 0..<rounds {
            memcpySequential = memcpySequential.best(
                Timing.measureSync {
                    for index in 0..<reads { memcpy(buffer.pointer, source.pointer + index * chunk, chunk) }
                })
        }
        print(
            "   1 MiB sequential read: \(format(megabytes / sequential.wall)) MB/s vs memcpy "
                + "\(format(megabytes / memcpySequential.wall)) MB/s (\(ratio(memcpySequential.wall, sequential.wall))x, "
                + "goal >= 0.3x); per CPU-second \(format(megabytes / sequential.cpu)) vs "
                + "\(format(megabytes / memcpySequential.cpu)) MB (\(ratio(memcpySequential.cpu, sequential.cpu))x)")

        await front.disconnect()
        try await serving.value
        try await nodes.destroy(in: backStore)
    }

    private static func randomReads(_ front: BlockFront, depth: Int, perTask: Int, sectors: UInt64) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<depth {
                group.addTask {
                    let buffer = PageBuffer(pages: 1)
                    // A cheap generator: SystemRandomNumberGenerator is a getrandom(2) call per number.
                    var generator = SplitMix64(seed: UInt64.random(in: 0...UInt64.max))
                    for _ in 0..<perTask {
                        let sector = UInt64.random(in: 0..<(sectors / 8), using: &generator) * 8
                        try await front.read(at: sector, into: [buffer])
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    static func format(_ value: Double) -> String {
        value >= 1000 ? String(Int(value.rounded())) : String(Double(Int(value * 10)) / 10)
    }

    static func ratio(_ value: Double, _ baseline: Double) -> String {
        String(Double(Int(value / baseline * 1000)) / 1000)
    }
}

/// Wall-clock and process CPU seconds of one measured run.
struct Timing {
    var wall: Double
    var cpu: Double

    static let worst = Timing(wall: .infinity, cpu: .infinity)

    func best(_ other: Timing) -> Timing { Timing(wall: min(wall, other.wall), cpu: min(cpu, other.cpu)) }

    static func now() -> (Double, Double) {
        var cpu = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu)
        return (MonotonicClock.seconds(), Double(cpu.tv_sec) + Double(cpu.tv_nsec) / 1e9)
    }

    static func measure(_ body: () async throws -> Void) async rethrows -> Timing {
        let start = now()
        try await body()
        let end = now()
        return Timing(wall: end.0 - start.0, cpu: end.1 - start.1)
    }

    static func measureSync(_ body: () -> Void) -> Timing {
        let start = now()
        body()
        let end = now()
        return Timing(wall: end.0 - start.0, cpu: end.1 - start.1)
    }
}
