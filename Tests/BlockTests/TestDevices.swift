import BlockDevice
import Synchronization
import XenCore

/// Forwards to a base device, counting flushes.
final class CountingDevice: BlockDevice {
    let base: MemoryBlockDevice
    private let count = Atomic<Int>(0)
    init(_ base: MemoryBlockDevice) { self.base = base }
    var flushes: Int { count.load(ordering: .relaxed) }
    func info() async -> BlockDeviceInfo { await base.info() }
    func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        try await base.read(at: sector, into: buffers)
    }
    func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        try await base.write(at: sector, from: buffers)
    }
    func flush() async throws(BlockError) { count.add(1, ordering: .relaxed) }
    func discard(at sector: UInt64, count: UInt64) async throws(BlockError) {
        try await base.discard(at: sector, count: count)
    }
    var supportsDiscard: Bool { base.supportsDiscard }
    func disconnect() async { await base.disconnect() }
}

/// Holds every read and write until `open()`; counts arrivals so a test knows requests reached the device.
final class GatedDevice: BlockDevice {
    private struct State {
        var open = false
        var arrivals = 0
        var held: [CheckedContinuation<Void, Never>] = []
        var watchers: [(Int, CheckedContinuation<Void, Never>)] = []
    }
    let base: MemoryBlockDevice
    private let state = Mutex(State())
    init(_ base: MemoryBlockDevice) { self.base = base }

    func open() {
        let held = state.withLock { state in
            state.open = true
            defer { state.held.removeAll() }
            return state.held
        }
        for continuation in held { continuation.resume() }
    }

    func waitForArrivals(_ count: Int) async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state in
                if state.arrivals >= count { return true }
                state.watchers.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func gate() async {
        await withCheckedContinuation { continuation in
            let (pass, ready) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
                state.arrivals += 1
                let arrivals = state.arrivals
                let ready = state.watchers.filter { $0.0 <= arrivals }.map(\.1)
                state.watchers.removeAll { $0.0 <= arrivals }
                if state.open { return (true, ready) }
                state.held.append(continuation)
                return (false, ready)
            }
            for watcher in ready { watcher.resume() }
            if pass { continuation.resume() }
        }
    }

    func info() async -> BlockDeviceInfo { await base.info() }
    func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        await gate()
        try await base.read(at: sector, into: buffers)
    }
    func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        await gate()
        try await base.write(at: sector, from: buffers)
    }
    func disconnect() async { await base.disconnect() }
}
