import GrantTable
import SimulatedHypervisor
import Testing
import XenCore

/// The grant-table waits (free references, a peer's unmap): `CancellationError` when cancelled, a typed
/// `.timedOut` when bounded; and the scoped helpers releasing on every path, cancellation included.
@Suite struct WaitsAndScopedHelpersTests {
    let domains: FrontAndBack
    var hypervisor: SimulatedHypervisor { domains.hypervisor }
    var front: SimulatedDomain { domains.front }
    var back: SimulatedDomain { domains.back }

    init() throws { domains = try FrontAndBack() }

    // MARK: - GrantRefPool

    /// The timer ends a wait through the path cancellation takes (tested with waiters queued behind in
    /// `GrantRefPoolTests`); here, what a timed-out wait leaves: nothing taken, nobody queued.
    @Test func boundedGetTimesOutTakingNothing() async throws {
        let pool = GrantRefPool(refs: 0..<2)
        let held = pool.getNonblocking(count: 2)
        pool.put(held[0])
        let limit = Duration.milliseconds(20)
        await #expect(throws: GrantTableError.timedOut(.freeRefs(count: 2), after: limit)) {
            try await pool.get(count: 2, timeout: limit)
        }
        #expect(pool.waitingCount == 0)
        #expect(pool.freeCount == 1)
        #expect(try await pool.get(timeout: limit) == held[0])
        await #expect(throws: GrantTableError.timedOut(.freeRefs(count: 1), after: limit)) {
            try await pool.get(timeout: limit)
        }
        #expect(pool.waitingCount == 0)
        pool.put(held)
        #expect(try await pool.get(count: 2, timeout: limit) == held)
    }

    @Test func withRefReturnsTheRefWhenCancelledInTheBodyOrWhileWaiting() async throws {
        let pool = GrantRefPool(refs: 0..<1)
        let inBody = Task { try await pool.withRef { _ in try await Task.sleep(for: .seconds(3600)) } }
        #expect(await eventually { pool.freeCount == 0 })
        let waiting = Task { try await pool.withRefs(1) { _ in Issue.record("body ran without a ref") } }
        #expect(await eventually { pool.waitingCount == 1 })
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(pool.waitingCount == 0)
        inBody.cancel()
        await #expect(throws: CancellationError.self) { try await inBody.value }
        #expect(pool.freeCount == 1)
    }

    // MARK: - endAccess

    /// A ref from the pool granted to the peer and mapped there; `free` is the pool's count with it taken.
    private func grantMappedByThePeer() async throws -> (GrantRef, free: Int, GrantMappingHandle) {
        let ref = try await front.grantTable.refs.get()
        try front.grantTable.grantAccess(ref, to: back.id, writable: true, page: PageBuffer(pages: 1))
        let mapping = GrantMappingHandle(try back.grantTable.map(domain: front.id, ref: ref, writable: true))
        return (ref, front.grantTable.refs.freeCount, mapping)
    }

    @Test func cancelledEndAccessThrowsCancellationErrorAndLeavesTheGrant() async throws {
        let table = front.grantTable
        let (ref, free, mapping) = try await grantMappedByThePeer()
        let ending = Task {
            try await table.endAccess(ref, retryingEvery: .milliseconds(1), timeout: nil, releaseRef: true)
        }
        ending.cancel()
        await #expect(throws: CancellationError.self) { try await ending.value }
        // Not revoked under the peer, not returned to the pool.
        #expect(throws: GrantTableError.busy(ref)) { try table.endAccess(ref) }
        #expect(table.refs.freeCount == free)
        try mapping.unmap()
        try await table.endAccess(ref, retryingEvery: .milliseconds(1), releaseRef: true)
        #expect(table.refs.freeCount == free + 1)
    }

    @Test func boundedEndAccessTimesOutAndLeavesTheGrant() async throws {
        let table = front.grantTable
        let (ref, free, mapping) = try await grantMappedByThePeer()
        let limit = Duration.milliseconds(20)
        await #expect(throws: GrantTableError.timedOut(.unmap(refs: [ref]), after: limit)) {
            try await table.endAccess(ref, retryingEvery: .milliseconds(1), timeout: limit, releaseRef: true)
        }
        #expect(throws: GrantTableError.busy(ref)) { try table.endAccess(ref) }
        #expect(table.refs.freeCount == free)
        try mapping.unmap()
        try await table.endAccess(ref, retryingEvery: .milliseconds(1), timeout: limit, releaseRef: true)
        #expect(table.refs.freeCount == free + 1)
    }

    // MARK: - Scoped helpers

    @Test func withGrantEndsAccessAfterACancelledBodyOnceThePeerUnmaps() async throws {
        let table = front.grantTable
        let peer = back.grantTable
        let frontID = front.id
        let mapped = Locked<GrantMappingHandle?>(nil)
        let granting = Task {
            try await table.withGrant(
                8, to: back.id, writable: true, page: PageBuffer(pages: 1), retryingEvery: .milliseconds(1),
                endAccessTimeout: nil
            ) {
                let mapping = GrantMappingHandle(try peer.map(domain: frontID, ref: 8, writable: true))
                mapped.withLock { $0 = mapping }
                try await Task.sleep(for: .seconds(3600))
            }
        }
        #expect(await eventually { mapped.withLock { $0 != nil } })
        granting.cancel()
        // The cleanup keeps waiting for the peer despite the cancellation: the grant is still in place.
        #expect(throws: GrantTableError.busy(8)) { try table.endAccess(8) }
        try mapped.withLock { $0 }?.unmap()
        await #expect(throws: CancellationError.self) { try await granting.value }
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == nil)
    }

    @Test func withGrantsThrowsTimedOutWhenThePeerKeepsAMapping() async throws {
        let table = front.grantTable
        let pages = PageBuffer(pages: 2).pages
        let limit = Duration.milliseconds(20)
        let kept = Locked<GrantMappingHandle?>(nil)
        await #expect(throws: GrantTableError.timedOut(.unmap(refs: [9]), after: limit)) {
            try await table.withGrants(
                [8, 9], to: back.id, writable: false, pages: pages, retryingEvery: .milliseconds(1),
                endAccessTimeout: limit
            ) {
                let mapping = GrantMappingHandle(try back.grantTable.map(domain: front.id, ref: 9, writable: false))
                kept.withLock { $0 = mapping }
            }
        }
        // Ref 8 was ended; ref 9 is still granted (the peer maps it) until the peer lets go.
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == nil)
        #expect(throws: GrantTableError.busy(9)) { try table.endAccess(9) }
        try kept.withLock { $0 }?.unmap()
        try table.endAccess(9)
    }

    @Test func withMappingUnmapsWhenTheBodyIsCancelled() async throws {
        try front.grantTable.grantAccess(8, to: back.id, writable: true, page: PageBuffer(pages: 1))
        let peer = back.grantTable
        let frontID = front.id
        let mapping = Task {
            try await peer.withMapping(domain: frontID, ref: 8, writable: true) { _ in
                try await Task.sleep(for: .seconds(3600))
            }
        }
        #expect(await eventually { hypervisor.grantMappingCount(granter: frontID, ref: 8) == 1 })
        mapping.cancel()
        await #expect(throws: CancellationError.self) { try await mapping.value }
        #expect(hypervisor.grantMappingCount(granter: front.id, ref: 8) == 0)
    }

    @Test func asyncWithGntshrClosesTheInterfaceOnEveryPath() async throws {
        let refs = front.grantTable.refs
        let opened = Locked<SimulatedGntshr?>(nil)
        await #expect(throws: TestFailure.self) {
            try await front.withGntshr { interface in
                opened.withLock { $0 = interface }
                await Task.yield()
                throw TestFailure()
            }
        }
        let interface = try #require(opened.withLock { $0 })
        #expect(throws: GrantTableError.closed) {
            _ = try interface.sharePages(with: back.id, count: 1, writable: true)
        }
        let count = try await front.withGntshr { interface async throws in
            let shared = try interface.sharePages(with: back.id, count: 2, writable: true)
            await Task.yield()
            return shared.refs.count
        }
        #expect(count == 2)
        #expect(refs.freeCount == refs.capacity)  // the share dropped in the body was unshared
    }
}
