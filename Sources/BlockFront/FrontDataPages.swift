import GrantTable
import Synchronization
import XenCore

/// A page the frontend hands to the backend through a grant.
struct GrantedPage: Sendable {
    let page: PageBuffer
    let ref: GrantRef
}

/// The frontend's granted pages. With persistent grants (both ends advertise `feature-persistent`) a page is
/// granted once, read-write, and reused for every later request, so the backend can keep it mapped; without
/// them each request grants fresh references and ends access once its response arrived.
///
/// With a gntshr interface (userspace on real Xen, where `grantAccess` is unavailable) every page comes from
/// `sharePages` and stays granted until disconnect: a pool that grows on demand up to `capacity`, reused by
/// every request whether or not persistent grants were negotiated.
///
/// OCaml: none (not in mirage-block-xen: no persistent grants); Linux xen-blkfront `get_free_grant`/`persistent_gnts`
final class FrontDataPages: Sendable {
    private struct State {
        var free: [GrantedPage] = []
        /// The gntshr allocations backing the pool, unshared at disconnect.
        var shares: [SharedPagesHandle] = []
        var spare: [PageBuffer] = []
        /// Pages that may still be taken: requests reserve their whole count at once, so concurrent requests
        /// holding partial sets of grant references can never starve each other.
        var budget: Int
        var waiters: [(count: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    let persistent: Bool
    /// Most pages all requests in flight may hold (also the most persistent grants ever made).
    let capacity: Int
    private let grants: any GrantTableBackend
    private let backend: DomainID
    private let sharer: (any GntshrBackend)?
    private let state: Mutex<State>

    init(
        grants: any GrantTableBackend, sharer: (any GntshrBackend)? = nil, backend: DomainID, persistent: Bool,
        capacity: Int
    ) {
        self.grants = grants
        self.sharer = sharer
        self.backend = backend
        self.persistent = persistent
        self.capacity = capacity
        self.state = Mutex(State(budget: capacity))
    }

    /// Reserves `count` pages of the budget, waiting in FIFO order.
    private func reserve(_ count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLock { state -> Bool in
                if state.waiters.isEmpty, state.budget >= count {
                    state.budget -= count
                    return true
                }
                state.waiters.append((count, continuation))
                return false
            }
            if granted { continuation.resume() }
        }
    }

    /// Returns `count` pages to the budget and wakes the waiters that now fit, in order.
    private func unreserve(_ count: Int) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.budget += count
            var ready: [CheckedContinuation<Void, Never>] = []
            while let first = state.waiters.first, first.count <= state.budget {
                state.budget -= first.count
                ready.append(first.continuation)
                state.waiters.removeFirst()
            }
            return ready
        }
        for continuation in ready { continuation.resume() }
    }

    /// `count` pages granted to the backend (writable when it must write them: reads, or any persistent page).
    func take(_ count: Int, backendWrites: Bool) async throws(BlockFrontError) -> [GrantedPage] {
        guard count <= capacity else { throw .resources("request of \(count) pages exceeds \(capacity)") }
        await reserve(count)
        do throws(BlockFrontError) {
            return try await takeReserved(count, backendWrites: backendWrites)
        } catch {
            unreserve(count)
            throw error
        }
    }

    private func takeReserved(_ count: Int, backendWrites: Bool) async throws(BlockFrontError) -> [GrantedPage] {
        if let sharer { return try takeShared(count, sharer: sharer) }
        if persistent {
            var pages = state.withLock { state -> [GrantedPage] in
                let n = min(count, state.free.count)
                defer { state.free.removeLast(n) }
                return Array(state.free.suffix(n))
            }
            if pages.count < count {
                do {
                    let refs = try await grants.refs.get(count: count - pages.count)
                    for (index, ref) in refs.enumerated() {
                        let page = grants.allocatePages(1)
                        do {
                            try grants.grantAccess(ref, to: backend, writable: true, page: page)
                        } catch {
                            _ = grants.refs.put(Array(refs[index...]))
                            throw error
                        }
                        pages.append(GrantedPage(page: page, ref: ref))
                    }
                } catch {
                    state.withLock { $0.free.append(contentsOf: pages) }
                    throw .resources("granting persistent pages", underlying: error)
                }
            }
            return pages
        }
        var pages: [GrantedPage] = []
        do {
            let refs = try await grants.refs.get(count: count)
            let memory = state.withLock { state -> [PageBuffer] in
                let n = min(count, state.spare.count)
                defer { state.spare.removeLast(n) }
                return Array(state.spare.suffix(n))
            }
            for (index, ref) in refs.enumerated() {
                let page = index < memory.count ? memory[index] : grants.allocatePages(1)
                do {
                    try grants.grantAccess(ref, to: backend, writable: backendWrites, page: page)
                } catch {
                    _ = grants.refs.put(Array(refs[index...]))
                    throw error
                }
                pages.append(GrantedPage(page: page, ref: ref))
            }
            return pages
        } catch {
            for granted in pages where (try? grants.endAccess(granted.ref)) != nil { _ = grants.refs.put(granted.ref) }
            throw .resources("granting \(count) page(s)", underlying: error)
        }
    }

    /// Pages from the shared pool, sharing one more contiguous block for whatever the pool lacks.
    private func takeShared(_ count: Int, sharer: any GntshrBackend) throws(BlockFrontError) -> [GrantedPage] {
        var pages = state.withLock { state -> [GrantedPage] in
            let n = min(count, state.free.count)
            defer { state.free.removeLast(n) }
            return Array(state.free.suffix(n))
        }
        let missing = count - pages.count
        guard missing > 0 else { return pages }
        let share: SharedPagesHandle
        do {
            share = SharedPagesHandle(try sharer.sharePages(with: backend, count: missing, writable: true))
        } catch {
            state.withLock { $0.free.append(contentsOf: pages) }
            throw .resources("sharing \(missing) page(s) through gntshr", underlying: error)
        }
        // A backend implementation that hands back the wrong number of refs must not make us index past them.
        guard share.refs.count == missing, share.buffer.count >= missing * xenPageSize else {
            try? share.unshare()
            state.withLock { $0.free.append(contentsOf: pages) }
            throw .resources("gntshr shared \(share.refs.count) page(s), asked for \(missing)")
        }
        for (index, ref) in share.refs.enumerated() {
            pages.append(GrantedPage(page: share.buffer.slice(from: index * xenPageSize, count: xenPageSize), ref: ref))
        }
        state.withLock { $0.shares.append(share) }
        return pages
    }

    /// Returns pages after their request completed.
    func give(_ pages: [GrantedPage]) {
        guard !pages.isEmpty else { return }
        defer { unreserve(pages.count) }
        if persistent || sharer != nil {
            state.withLock { $0.free.append(contentsOf: pages) }
            return
        }
        var spare: [PageBuffer] = []
        for granted in pages {
            // A backend still mapping the page keeps it: leak the page and its ref rather than reuse it.
            guard (try? grants.endAccess(granted.ref)) != nil else { continue }
            _ = grants.refs.put(granted.ref)
            spare.append(granted.page)
        }
        state.withLock { state in
            if state.spare.count < 1024 { state.spare.append(contentsOf: spare) }
        }
    }

    /// Pages of a request abandoned on a protocol failure: the backend may still write them, so they are
    /// never reused; their grants are ended where possible.
    func abandon(_ pages: [GrantedPage]) {
        // Shared pages stay granted until disconnect; the abandoned ones are simply never handed out again.
        guard sharer == nil else { return unreserve(pages.count) }
        for granted in pages where (try? grants.endAccess(granted.ref)) != nil { _ = grants.refs.put(granted.ref) }
        unreserve(pages.count)
    }

    /// Ends every persistent grant and unshares the gntshr pool (at disconnect, after every request returned
    /// its pages; gntshr defers freeing pages a misbehaving backend still maps). The pool's views are dropped
    /// before the shares they view are released.
    func releaseAll() {
        let shares: [SharedPagesHandle]
        do {
            let (pages, taken) = state.withLock { state -> ([GrantedPage], [SharedPagesHandle]) in
                defer {
                    state.free.removeAll()
                    state.shares.removeAll()
                }
                return (state.free, state.shares)
            }
            shares = taken
            if sharer == nil {
                for granted in pages where (try? grants.endAccess(granted.ref)) != nil {
                    _ = grants.refs.put(granted.ref)
                }
            }
        }
        for share in shares { try? share.unshare() }
    }
}
