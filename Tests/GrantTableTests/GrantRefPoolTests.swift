import GrantTable
import Synchronization
import Testing
import XenCore

@Suite struct GrantRefPoolTests {
    @Test func nonblockingGetIsFIFOAndExhausts() {
        let pool = GrantRefPool(refs: 8..<12)
        #expect(pool.capacity == 4)
        #expect(pool.freeCount == 4)
        #expect(pool.getNonblocking() == 8)
        #expect(pool.getNonblocking() == 9)
        #expect(pool.put(8))
        #expect(pool.getNonblocking() == 10)
        #expect(pool.getNonblocking() == 11)
        // 8 went back to the tail of the queue.
        #expect(pool.getNonblocking() == 8)
        #expect(pool.freeCount == 0)
        #expect(pool.getNonblocking() == nil)
    }

    @Test func getNNonblockingIsAllOrNothing() {
        let pool = GrantRefPool(refs: 0..<5)
        #expect(pool.getNonblocking(count: 3) == [0, 1, 2])
        #expect(pool.getNonblocking(count: 3) == [])
        #expect(pool.freeCount == 2)
        #expect(pool.getNonblocking(count: 2) == [3, 4])
        #expect(pool.getNonblocking(count: 0) == [])
        #expect(pool.getNonblocking(count: -1) == [])
    }

    @Test func doubleAndForeignPutsAreRefused() {
        let pool = GrantRefPool(refs: 8..<10)
        let ref = pool.getNonblocking()!
        #expect(pool.put(ref))
        #expect(!pool.put(ref))
        #expect(!pool.put(GrantRef(7)))
        #expect(!pool.put(GrantRef(10)))
        #expect(pool.put([GrantRef(8), GrantRef(9), GrantRef(100)]) == 0)
        #expect(pool.freeCount == 2)
    }

    @Test func invalidCounts() async throws {
        let pool = GrantRefPool(refs: 0..<4)
        await #expect(throws: GrantTableError.requestTooLarge(requested: 5, capacity: 4)) {
            try await pool.get(count: 5)
        }
        await #expect(throws: GrantTableError.invalidCount(-1)) { try await pool.get(count: -1) }
        #expect(try await pool.get(count: 0) == [])
    }

    @Test func getSuspendsWhileFullAndWakesInFIFOOrder() async throws {
        let pool = GrantRefPool(refs: 0..<2)
        let held = pool.getNonblocking(count: 2)
        let first = Task { try await pool.get() }
        #expect(await eventually { pool.waitingCount == 1 })
        let second = Task { try await pool.get() }
        #expect(await eventually { pool.waitingCount == 2 })
        // A non-blocking caller is not served from an empty table either.
        #expect(pool.getNonblocking() == nil)

        pool.put(held[1])
        #expect(try await first.value == held[1])
        #expect(pool.waitingCount == 1)
        pool.put(held[0])
        #expect(try await second.value == held[0])
        #expect(pool.waitingCount == 0)
    }

    @Test func largeRequestAtTheHeadIsNotStarved() async throws {
        let pool = GrantRefPool(refs: 0..<4)
        let held = pool.getNonblocking(count: 4)
        let big = Task { try await pool.get(count: 3) }
        #expect(await eventually { pool.waitingCount == 1 })
        let small = Task { try await pool.get() }
        #expect(await eventually { pool.waitingCount == 2 })

        pool.put(held[0])
        pool.put(held[1])
        // Two free, but the head wants three: the small request behind it waits its turn.
        #expect(pool.waitingCount == 2)
        #expect(pool.freeCount == 2)
        pool.put(held[2])
        #expect(Set(try await big.value) == Set(held[0...2]))
        pool.put(held[3])
        #expect(try await small.value == held[3])
    }

    @Test func cancelledWaiterThrowsAndUnblocksThoseBehind() async throws {
        let pool = GrantRefPool(refs: 0..<2)
        let held = pool.getNonblocking(count: 2)
        pool.put(held[0])
        let big = Task { try await pool.get(count: 2) }
        #expect(await eventually { pool.waitingCount == 1 })
        let small = Task { try await pool.get() }
        #expect(await eventually { pool.waitingCount == 2 })

        big.cancel()
        await #expect(throws: CancellationError.self) { try await big.value }
        // With the head gone, the free ref goes to the next waiter.
        #expect(try await small.value == held[0])
        #expect(pool.waitingCount == 0)
    }

    @Test func cancelledBeforeWaitingThrows() async {
        let pool = GrantRefPool(refs: 0..<1)
        _ = pool.getNonblocking()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await pool.get()
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(pool.waitingCount == 0)
    }

    @Test func twentyConcurrentGetNCallersDoNotDeadlock() async throws {
        let pool = GrantRefPool(refs: 0..<10)
        let inUse = Locked(Set<GrantRef>())
        let violations = Locked(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<20 {
                group.addTask {
                    for round in 0..<25 {
                        let wanted = 1 + (caller * 7 + round * 3) % 10
                        let refs = try await pool.get(count: wanted)
                        #expect(refs.count == wanted)
                        inUse.withLock { set in
                            for ref in refs where !set.insert(ref).inserted { violations.withLock { $0 += 1 } }
                        }
                        await Task.yield()
                        inUse.withLock { set in for ref in refs { set.remove(ref) } }
                        pool.put(refs)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(violations.withLock { $0 } == 0)
        #expect(pool.freeCount == 10)
        #expect(pool.waitingCount == 0)
    }

    @Test func withRefAndWithRefsReleaseOnReturnAndThrow() async throws {
        let pool = GrantRefPool(refs: 0..<3)
        let value = try await pool.withRef { ref in
            #expect(pool.freeCount == 2)
            return ref.rawValue
        }
        #expect(value == 0)
        #expect(pool.freeCount == 3)
        await #expect(throws: TestFailure.self) {
            try await pool.withRef { _ in throw TestFailure() }
        }
        #expect(pool.freeCount == 3)
        await #expect(throws: TestFailure.self) {
            try await pool.withRefs(3) { refs in
                #expect(refs.count == 3)
                #expect(pool.freeCount == 0)
                throw TestFailure()
            }
        }
        #expect(pool.freeCount == 3)
    }
}
