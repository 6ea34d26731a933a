import GrantTable
import Synchronization
import XenCore

/// A page of ours the backend may reach through `ref`.
struct ExportedPage: Sendable {
    let page: PageBuffer
    let ref: GrantRef
}

/// Every page one frontend connection exports to its backend (rings, tx and rx buffers), granted once and
/// kept for the life of the connection (netback copies or maps them again and again). The owner: pages are
/// revoked only by ``release()``, which the connection calls after its queue tasks are joined and every
/// view of the pages (rings, buffers) has been dropped.
///
/// OCaml: none (mirage-net-xen grants per use: `Shared_page_pool` for tx, fresh grants for every rx page)
final class ExportedPages: Sendable {
    private struct State {
        var shares: [SharedPagesHandle] = []
        var granted: [GrantRef] = []
    }

    private let grants: any GrantTableBackend
    private let sharer: (any GntshrBackend)?
    private let backend: DomainID
    private let state = Mutex(State())

    init(grants: any GrantTableBackend, sharer: (any GntshrBackend)?, backend: DomainID) {
        self.grants = grants
        self.sharer = sharer
        self.backend = backend
    }

    /// `count` zeroed pages granted to the backend (`writable`: it may write them).
    func export(_ count: Int, writable: Bool) async throws -> [ExportedPage] {
        guard count > 0 else { return [] }
        if let sharer {
            let share = SharedPagesHandle(try sharer.sharePages(with: backend, count: count, writable: writable))
            state.withLock { $0.shares.append(share) }
            // An implementation that hands back the wrong number of refs must not make us index past them.
            guard share.refs.count == count, share.buffer.count >= count * xenPageSize else {
                throw GrantTableError.invalidCount(share.refs.count)
            }
            return share.refs.enumerated().map { index, ref in
                ExportedPage(page: share.buffer.slice(from: index * xenPageSize, count: xenPageSize), ref: ref)
            }
        }
        let refs = try await grants.refs.get(count: count)
        let memory = grants.allocatePages(count)
        var pages: [ExportedPage] = []
        for (index, ref) in refs.enumerated() {
            let page = memory.slice(from: index * xenPageSize, count: xenPageSize)
            do {
                try grants.grantAccess(ref, to: backend, writable: writable, page: page)
            } catch {
                _ = grants.refs.put(Array(refs[index...]))
                throw error
            }
            state.withLock { $0.granted.append(ref) }
            pages.append(ExportedPage(page: page, ref: ref))
        }
        return pages
    }

    /// Revokes everything: gntshr shares are unshared (gntalloc frees them once the backend unmapped), and
    /// grants are ended, their refs returned; a grant the backend still maps is left (its ref leaked rather
    /// than reused).
    func release() {
        let (shares, granted) = state.withLock { state in
            defer { state = State() }
            return (state.shares, state.granted)
        }
        for share in shares { try? share.unshare() }
        for ref in granted where (try? grants.endAccess(ref)) != nil { _ = grants.refs.put(ref) }
    }
}
