import SimulatedHypervisor
import Synchronization

/// Yields until `condition` holds (bounded, so a broken implementation fails instead of hanging).
/// Not a timed assertion: it waits for a state, never for a duration.
func eventually(_ condition: () -> Bool) async -> Bool {
    for round in 0..<20_000 {
        if condition() { return true }
        if round < 1_000 {
            await Task.yield()
        } else {
            try? await Task.sleep(for: .milliseconds(1))
        }
    }
    return condition()
}

struct TestFailure: Error, Equatable {}

/// A thread-safe record of events, for checking orders across tasks.
final class Recorder<T: Sendable>: Sendable {
    private let items = Mutex<[T]>([])
    func append(_ item: T) { items.withLock { $0.append(item) } }
    var all: [T] { items.withLock { $0 } }
}

/// A lock-protected value shared between test tasks.
final class Locked<T: Sendable>: Sendable {
    private let value: Mutex<T>
    init(_ value: T) { self.value = Mutex(value) }
    func withLock<R>(_ body: (inout T) -> R) -> R { value.withLock { body(&$0) } }
}

/// A simulated hypervisor with two domains: `front` grants, `back` maps.
struct FrontAndBack {
    let hypervisor: SimulatedHypervisor
    let front: SimulatedDomain
    let back: SimulatedDomain

    init(grantTableSize: Int = 16) throws {
        hypervisor = SimulatedHypervisor(grantTableSize: grantTableSize)
        front = try hypervisor.createDomain(name: "front")
        back = try hypervisor.createDomain(name: "back")
    }
}
