public import XenCore

/// One domain's grant table: the export side (grant our pages to another domain) and the import side (map
/// pages another domain granted us).
///
/// Implementations: `XenGrantTable` (real, `/dev/xen/gntdev`; import only, since userspace cannot grant
/// arbitrary pages — share with ``GntshrBackend`` instead) and `SimulatedGrantTable` (both sides). Code that
/// must run on both should export with ``GntshrBackend`` and import with ``map(domain:ref:writable:)``.
/// OCaml: `Xen_os.Xen.Export` + `Xen_os.Xen.Import` (mirage-xen), `Gnt.Gnttab` (ocaml-gnt)
public protocol GrantTableBackend: Sendable {
    /// The domain this table belongs to.
    var domain: DomainID { get }

    /// This domain's free grant references.
    ///
    /// OCaml: the `Xen_os.Xen.Export` free list
    var refs: GrantRefPool { get }

    /// `count` zeroed pages to grant with ``grantAccess(_:to:writable:page:)``. Any page-aligned
    /// `PageBuffer` may be granted; pages from here are what the simulated hypervisor can map at the
    /// mapper's own, fenceable address (the default is plain `PageBuffer(pages:)`).
    ///
    /// OCaml: `Io_page.get`
    func allocatePages(_ count: Int) -> PageBuffer

    /// Grants `domain` access to the first 4096 bytes of `page` (page-aligned) under `ref`.
    ///
    /// Throws `.alreadyGranted` if `ref` holds a grant, `.invalidRef`, `.invalidPage`, or `.unsupported` on the
    /// real backend. OCaml: `Xen_os.Xen.Export.grant_access ~domid ~writable gntref page`
    func grantAccess(_ ref: GrantRef, to domain: DomainID, writable: Bool, page: PageBuffer) throws(GrantTableError)

    /// Revokes the grant under `ref` (the reference stays allocated: `put` it back yourself).
    ///
    /// Refuses with `.busy` while the other side still maps the page.
    /// OCaml: `Xen_os.Xen.Export.try_end_access`
    func endAccess(_ ref: GrantRef) throws(GrantTableError)

    /// Maps one page that `domain` granted us under `ref`.
    ///
    /// Throws `.notGranted`, `.wrongDomain` (granted to someone else) or `.readOnly` (writable map of a
    /// read-only grant). OCaml: `Xen_os.Xen.Import.map_exn ~writable grant` / `Gnt.Gnttab.map_exn`
    func map(domain: DomainID, ref: GrantRef, writable: Bool) throws(GrantTableError) -> GrantMapping

    /// Maps several grants of `domain` as one contiguous buffer, all or nothing.
    ///
    /// OCaml: `Xen_os.Xen.Import.mapv_exn` / `Gnt.Gnttab.mapv_exn`
    func mapv(domain: DomainID, refs: [GrantRef], writable: Bool) throws(GrantTableError) -> GrantMapping
}

extension GrantTableBackend {
    /// Plain page-aligned memory.
    ///
    /// OCaml: `Io_page.get`
    public func allocatePages(_ count: Int) -> PageBuffer { PageBuffer(pages: count) }

    /// Revokes the grant, retrying every `interval` while the other side still maps it, then optionally
    /// returns `ref` to the pool.
    ///
    /// The wait is bounded by `timeout` (30 s by default; nil waits as long as it takes, as OCaml does): when
    /// it runs out, ``GrantTableError/timedOut(_:after:)`` (``GrantTableWait/unmap(refs:)``) is thrown and the
    /// grant stays in place (a peer that never unmaps costs a reference, never a page pulled from under it).
    /// Cancelling the task throws `CancellationError`, the grant likewise left in place. Any other refusal is
    /// the ``GrantTableError`` of ``endAccess(_:)``. (Untyped `throws` because a typed throw carries one type.)
    ///
    /// OCaml: `Xen_os.Xen.Export.end_access ~release_ref gntref` (which retries every 10 s, without limit)
    public func endAccess(
        _ ref: GrantRef, retryingEvery interval: Duration, timeout: Duration? = .seconds(30), releaseRef: Bool = false
    ) async throws {
        try await endAccess([ref], retryingEvery: interval, timeout: timeout)
        if releaseRef { refs.put(ref) }
    }

    /// Ends access to every ref of `refs`, retrying the ones the peer still maps every `interval` until
    /// `timeout` (one deadline for all). Every ref is tried; the first refusal other than `.busy` is thrown
    /// after the rest were ended, else `.timedOut` naming the refs still mapped.
    func endAccess(_ refs: [GrantRef], retryingEvery interval: Duration, timeout: Duration?) async throws {
        let clock = ContinuousClock()
        let deadline = timeout.map { clock.now.advanced(by: $0) }
        var pending = refs
        var failure: GrantTableError?
        while true {
            var busy: [GrantRef] = []
            for ref in pending {
                do throws(GrantTableError) {
                    try endAccess(ref)
                } catch {
                    if case .busy = error { busy.append(ref) } else if failure == nil { failure = error }
                }
            }
            pending = busy
            if pending.isEmpty { break }
            guard let deadline, let timeout else {
                try await Task.sleep(for: interval)
                continue
            }
            let left = clock.now.duration(to: deadline)
            if left <= .zero {
                if failure == nil { failure = .timedOut(.unmap(refs: pending), after: timeout) }
                break
            }
            try await Task.sleep(for: min(interval, left))
        }
        if let failure { throw failure }
    }

    /// `endAccess(refs, ...)` run to its end even if the calling task is cancelled: the cleanup of a scoped
    /// helper must not leave grants behind because the body was cancelled. Bounded by `timeout`.
    func endAccessDespiteCancellation(
        _ refs: [GrantRef], retryingEvery interval: Duration, timeout: Duration?
    ) async throws {
        guard !refs.isEmpty else { return }
        // An unstructured task does not inherit the caller's cancellation.
        try await Task { try await self.endAccess(refs, retryingEvery: interval, timeout: timeout) }.value
    }

    /// Grants `page` to `domain` under `ref` for the duration of `body`, ending access afterwards on every
    /// path (return, throw, cancellation), retrying every `interval` while the peer still maps the page, for
    /// at most `endAccessTimeout` (nil: no limit). Cancellation does not cut that wait short. When `body`
    /// returns but access cannot be ended, the ``GrantTableError`` (`.timedOut`) is thrown; when `body`
    /// throws, its error is.
    ///
    /// OCaml: `Xen_os.Xen.Export.with_grant`
    public func withGrant<R>(
        _ ref: GrantRef, to domain: DomainID, writable: Bool, page: PageBuffer,
        retryingEvery interval: Duration = .milliseconds(10), endAccessTimeout: Duration? = .seconds(30),
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> R
    ) async throws -> R {
        try await withGrants(
            [ref], to: domain, writable: writable, pages: [page], retryingEvery: interval,
            endAccessTimeout: endAccessTimeout, body)
    }

    /// Grants each page under the matching ref for the duration of `body`, all or nothing, ending access to
    /// every one afterwards as ``withGrant(_:to:writable:page:retryingEvery:endAccessTimeout:isolation:_:)``
    /// does (one deadline for all).
    ///
    /// OCaml: `Xen_os.Xen.Export.with_grants`
    public func withGrants<R>(
        _ refs: [GrantRef], to domain: DomainID, writable: Bool, pages: [PageBuffer],
        retryingEvery interval: Duration = .milliseconds(10), endAccessTimeout: Duration? = .seconds(30),
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> R
    ) async throws -> R {
        guard refs.count == pages.count else { throw GrantTableError.invalidCount(pages.count) }
        var granted: [GrantRef] = []
        let result: R
        do {
            for (ref, page) in zip(refs, pages) {
                try grantAccess(ref, to: domain, writable: writable, page: page)
                granted.append(ref)
            }
            result = try await body()
        } catch {
            try? await endAccessDespiteCancellation(granted, retryingEvery: interval, timeout: endAccessTimeout)
            throw error
        }
        try await endAccessDespiteCancellation(granted, retryingEvery: interval, timeout: endAccessTimeout)
        return result
    }

    /// Maps a grant for the duration of `body`, unmapping afterwards on every path (return, throw,
    /// cancellation). Views of the buffer that `body` keeps hold the pages mapped until they go.
    ///
    /// OCaml: `Xen_os.Xen.Import.with_mapping`
    public func withMapping<R>(
        domain: DomainID, ref: GrantRef, writable: Bool,
        isolation: isolated (any Actor)? = #isolation, _ body: (PageBuffer) async throws -> R
    ) async throws -> R {
        let mapping = GrantMappingHandle(try map(domain: domain, ref: ref, writable: writable))
        do {
            let result = try await body(mapping.buffer)
            try mapping.unmap()
            return result
        } catch {
            try? mapping.unmap()
            throw error
        }
    }
}

/// The gntshr interface: allocate pages here and share them with another domain in one call.
///
/// Implementations: `XenGntshr` (real, `/dev/xen/gntalloc`) and `SimulatedGntshr`.
/// OCaml: `Gnt.Gntshr.interface`
public protocol GntshrBackend: Sendable {
    /// Allocates `count` zeroed contiguous pages and grants them to `domain`.
    ///
    /// Throws `.tableFull` rather than waiting for free references (as OCaml does), `.invalidCount`.
    /// OCaml: `Gnt.Gntshr.share_pages_exn if domid count writable`
    func sharePages(with domain: DomainID, count: Int, writable: Bool) throws(GrantTableError) -> SharedPages

    /// Closes the interface; later calls fail with `.closed`. Existing shares stay valid until unshared.
    ///
    /// OCaml: `Gnt.Gntshr.interface_close`
    func close()
}

extension GntshrBackend {
    /// Like ``sharePages(with:count:writable:)`` but answers nil on failure.
    ///
    /// OCaml: `Gnt.Gntshr.share_pages`
    public func sharePagesIfPossible(with domain: DomainID, count: Int, writable: Bool) -> SharedPages? {
        do { return try sharePages(with: domain, count: count, writable: writable) } catch { return nil }
    }
}
