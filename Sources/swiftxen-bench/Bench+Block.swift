import BlockBack
import BlockDevice
import BlockFront
import Glibc
import SimulatedHypervisor
import XenCore
import XenStoreClient
import XenStoreServer

/// Block: BlockFront ↔ BlockBack on the simulated hypervisor over a RAM-backed device, against a plain memcpy
/// of the same bytes. 4 KiB random reads at queue depth 32 (IOPS) and 1 MiB sequential reads (MB/s).
enum BlockBench {
    static func run() async throws {
        let hypervisor = SimulatedHypervisor()
        let server = XenStoreServer()
        let guest = try hypervisor.createDomain(name: "bench")
        let dom0 = hypervisor.dom0
        let backStore = XenStoreBus(client: XenStoreClient(transport: server.connect(domain: .dom0)))
        let frontStore = XenStoreBus(client: XenStoreClient(transport: server.connect(domain: guest.id)))
        let nodes = VirtualBlockDeviceNodes(backendDomain: dom0.id, frontendDomain: guest.id, deviceID: 51712)
        try await nodes.create(in: backStore)
        let deviceBytes = 64 << 20
        let device = MemoryBlockDevice(sizeSectors: UInt64(deviceBytes / 512))
        let serving = Task {
            try await BlockBack.serve(
                device, backendPath: nodes.backendPath, store: backStore, grants: dom0.grantTable,
                events: dom0.eventChannel, options: BlockBackOptions(domain: dom0.id))
        }
        let front = try await BlockFront.connect(
            "xvda", store: frontStore, grants: guest.grantTable, events: guest.eventChannel,
            options: BlockFrontOptions(domain: guest.id))
        let negotiated = front.negotiated
        print(
            "   negotiated: \(negotiated.ringPages)-page ring, \(negotiated.queues) queue(s), "
                + "\(negotiated.segmentsPerRequest) segments/request, persistent grants \(negotiated.persistentGrants)")

        // The machine may be shared: each figure is the best of several rounds, for us and for memcpy alike.
        let rounds = 5
        let clock = ContinuousClock()

        // 4 KiB random reads, queue depth 32.
        let depth = 32
        let perTask = 400
        let ops = depth * perTask
        let sectors = UInt64(deviceBytes / 512)
        try await randomReads(front, depth: 4, perTask: 100, sectors: sectors)  // warm-up (grants, caches)
        var randomTime = Duration.seconds(1000)
        for _ in 0..<rounds {
            randomTime = min(
                randomTime,
                try await clock.measure {
                    try await randomReads(front, depth: depth, perTask: perTask, sectors: sectors)
                })
        }
        let iops = Double(ops) / seconds(randomTime)
        let source = PageBuffer(pages: deviceBytes / 4096)
        let target = PageBuffer(pages: 1)
        var generator = BenchRandom(seed: 7)
        var memcpyRandom = Duration.seconds(1000)
        for _ in 0..<rounds {
            memcpyRandom = min(
                memcpyRandom,
                clock.measure {
                    for _ in 0..<ops {
                        let page = Int.random(in: 0..<(deviceBytes / 4096), using: &generator)
                        memcpy(target.pointer, source.pointer + page * 4096, 4096)
                    }
                })
        }
        let memcpyIOPS = Double(ops) / seconds(memcpyRandom)
        print(
            "   4 KiB random read, QD\(depth): \(format(iops)) IOPS  vs memcpy \(format(memcpyIOPS)) /s  "
                + "(\(ratio(iops, memcpyIOPS))x)")

        // 1 MiB sequential reads over the whole 64 MiB device.
        let chunk = 1 << 20
        let buffer = PageBuffer(pages: chunk / 4096)
        let reads = deviceBytes / chunk
        try await front.read(at: 0, into: [buffer])
        var sequentialTime = Duration.seconds(1000)
        for _ in 0..<rounds {
            sequentialTime = min(
                sequentialTime,
                try await clock.measure {
                    for index in 0..<reads {
                        try await front.read(at: UInt64(index * chunk / 512), into: [buffer])
                    }
                })
        }
        let megabytes = Double(reads * chunk) / 1e6
        let throughput = megabytes / seconds(sequentialTime)
        var memcpyTime = Duration.seconds(1000)
        for _ in 0..<rounds {
            memcpyTime = min(
                memcpyTime,
                clock.measure {
                    for index in 0..<reads { memcpy(buffer.pointer, source.pointer + index * chunk, chunk) }
                })
        }
        let memcpyThroughput = megabytes / seconds(memcpyTime)
        print(
            "   1 MiB sequential read: \(format(throughput)) MB/s  vs memcpy \(format(memcpyThroughput)) MB/s  "
                + "(\(ratio(throughput, memcpyThroughput))x, goal >= 0.3x)")

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
                    var generator = BenchRandom(seed: UInt64.random(in: 0...UInt64.max))
                    for _ in 0..<perTask {
                        let sector = UInt64.random(in: 0..<(sectors / 8), using: &generator) * 8
                        try await front.read(at: sector, into: [buffer])
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    private static func format(_ value: Double) -> String {
        value >= 1000 ? String(Int(value.rounded())) : String(Double(Int(value * 10)) / 10)
    }

    private static func ratio(_ value: Double, _ baseline: Double) -> String {
        String(Double(Int(value / baseline * 1000)) / 1000)
    }
}

/// SplitMix64: a few instructions per number, so the benchmark measures I/O, not random numbers.
struct BenchRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
