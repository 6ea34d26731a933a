// Grants and event channels (issue 4): gntref pool throughput and notify→wake latency through the simulator.
// The OCaml peer (mirage-xen's Export free list, Activations) only runs inside a unikernel, so these print
// our numbers with the machine's, for later regressions to show.
import EventChannel
import GrantTable
import SimulatedHypervisor
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

private func machineDescription() -> String {
    var model = "unknown CPU"
    if let file = fopen("/proc/cpuinfo", "r") {
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 512)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if text.hasPrefix("model name"), let colon = text.firstIndex(of: ":") {
                model =
                    text[text.index(after: colon)...].trimmingPrefix(" ").split(separator: "\n").first.map(String.init)
                    ?? model
                break
            }
        }
    }
    return "\(model), \(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs online"
}

private func rate(_ count: Int, _ elapsed: Duration) -> String {
    let perSecond = Double(count) / elapsed.inSeconds
    return perSecond >= 1e6 ? "\((perSecond / 1e5).rounded() / 10) M/s" : "\((perSecond / 1e2).rounded() / 10) k/s"
}

private func microseconds(_ duration: Duration) -> String {
    let us = duration.inSeconds * 1e6
    return "\((us * 10).rounded() / 10) µs"
}

/// Event-channel latency samples, shared between the notifying and the woken task.
private final class LatencyProbe: Sendable {
    let sentAt = Mutex<ContinuousClock.Instant?>(nil)
    let samples = Mutex<[Duration]>([])
}

func benchGrants() async throws {
    print("   machine: \(machineDescription())")
    let clock = ContinuousClock()

    // MARK: gntref pool
    let pool = GrantRefPool()
    let pairs = 2_000_000
    var elapsed = clock.measure {
        for _ in 0..<pairs {
            if let ref = pool.getNonblocking() { pool.put(ref) }
        }
    }
    print("   gntref get_nonblock+put pairs: \(rate(pairs, elapsed))")

    let asyncPairs = 1_000_000
    elapsed = try await clock.measure {
        for _ in 0..<asyncPairs { pool.put(try await pool.get()) }
    }
    print("   gntref get+put pairs (async): \(rate(asyncPairs, elapsed))")

    let batches = 200_000
    elapsed = try await clock.measure {
        for _ in 0..<batches { pool.put(try await pool.get(count: 11)) }
    }
    print("   gntref get_n(11)+put batches (async): \(rate(batches, elapsed))")

    // Contended: 8 tasks against a 64-ref pool, each taking 11 at a time, so most calls wait.
    let small = GrantRefPool(refs: 0..<64)
    let perTask = 25_000
    elapsed = try await clock.measure {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { for _ in 0..<perTask { small.put(try await small.get(count: 11)) } }
            }
            try await group.waitForAll()
        }
    }
    print("   gntref get_n(11)+put, 8 tasks contending for 64 refs: \(rate(8 * perTask, elapsed))")

    // MARK: notify → wake through the simulator
    let hypervisor = SimulatedHypervisor()
    let front = try hypervisor.createDomain(name: "front")
    let back = try hypervisor.createDomain(name: "back")
    let frontPort = try front.eventChannel.bindUnboundPort(remote: back.id)
    let backPort = try back.eventChannel.bindInterdomain(remote: front.id, remotePort: frontPort)
    let probe = LatencyProbe()
    let rounds = 50_000
    let backChannel = back.eventChannel
    let responder = Task {
        var events = backChannel.notifications(backPort).makeAsyncIterator()
        while await events.next() != nil {
            let woke = ContinuousClock.now
            if let sent = probe.sentAt.withLock({ $0 }) { probe.samples.withLock { $0.append(woke - sent) } }
            try backChannel.notify(backPort)
        }
    }
    var replies = front.eventChannel.notifications(frontPort).makeAsyncIterator()
    elapsed = try await clock.measure {
        for _ in 0..<rounds {
            probe.sentAt.withLock { $0 = ContinuousClock.now }
            try front.eventChannel.notify(frontPort)
            _ = await replies.next()
        }
    }
    try back.eventChannel.unbind(backPort)
    try await responder.value
    var samples = probe.samples.withLock { $0 }
    samples.sort()
    if !samples.isEmpty {
        let median = samples[samples.count / 2]
        let p99 = samples[min(samples.count - 1, samples.count * 99 / 100)]
        print(
            "   evtchn notify→wake (simulator, other task): median \(microseconds(median)), p99 \(microseconds(p99)),"
                + " round trips \(rate(rounds, elapsed))")
    }
}
