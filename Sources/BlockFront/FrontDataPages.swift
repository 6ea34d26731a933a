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
/// OCaml: not in mirage-block-xen (no persistent grants); Linux xen-blkfront `get_free_grant`/`persistent_gnts`
final class FrontDataPages: Sendable {
    private struct State {
        var free: [GrantedPage] = []
        var spare: [PageBuffer] = []
        var granted = 0
    }

    let persistent: Bool
    private let grants: any GrantTableBackend
    private let backend: DomainID
    private let state = Mutex(State())

    init(grants: any GrantTableBackend, backend: DomainID, persistent: Bool) {
        self.grants = grants
        self.backend = backend
        self.persistent = persistent
    }

    /// `count` pages granted to the backend (writable when it must write them: reads, or any persistent page).
    func take(_ count: Int, backendWrites: Bool) async throws(BlockFrontError) -> [GrantedPage] {
        if persistent {
            var pages = state.withLock { state -> [GrantedPage] in
                let n = min(count, state.free.count)
                defer { state.free.removeLast(n) }
                return Array(state.free.suffix(n))
            }
            if pages.count < count {
                do {
                    for _ in pages.count..<count {
                        let ref = try await grants.refs.get()
                        let page = PageBuffer(pages: 1)
                        try grants.grantAccess(ref, to: backend, writable: true, page: page)
                        pages.append(GrantedPage(page: page, ref: ref))
                    }
                } catch {
                    give(pages)
                    throw .resources("granting a persistent page: \(error)")
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
                let page = index < memory.count ? memory[index] : PageBuffer(pages: 1)
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
            give(pages)
            throw .resources("granting \(count) page(s): \(error)")
        }
    }

    /// Returns pages after their request completed.
    func give(_ pages: [GrantedPage]) {
        guard !pages.isEmpty else { return }
        if persistent {
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
        for granted in pages where (try? grants.endAccess(granted.ref)) != nil { _ = grants.refs.put(granted.ref) }
    }

    /// Ends every persistent grant (at disconnect, after the backend unmapped).
    func releaseAll() {
        let pages = state.withLock { state -> [GrantedPage] in
            defer { state.free.removeAll() }
            return state.free
        }
        abandon(pages)
    }
}
