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
    /// returns `ref` to the pool. Throws `.cancelled` if the task is cancelled while waiting.
    ///
    /// OCaml: `Xen_os.Xen.Export.end_access ~release_ref gntref` (which retries every 10 s)
    public func endAccess(
        _ ref: GrantRef, retryingEvery interval: Duration, releaseRef: Bool = false
    ) async throws(GrantTableError) {
        while true {
            do {
                try endAccess(ref)
                break
            } catch .busy {
                do { try await Task.sleep(for: interval) } catch { throw .cancelled }
            }
        }
        if releaseRef { refs.put(ref) }
    }

    /// Grants `page` to `domain` under `ref` for the duration of `body`, ending access afterwards (also when
    /// `body` throws; retrying while the peer still maps it).
    ///
    /// OCaml: `Xen_os.Xen.Export.with_grant`
    public func withGrant<R>(
        _ ref: GrantRef, to domain: DomainID, writable: Bool, page: PageBuffer,
        retryingEvery interval: Duration = .milliseconds(10),
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> R
    ) async throws -> R {
        try grantAccess(ref, to: domain, writable: writable, page: page)
        do {
            let result = try await body()
            try await endAccess(ref, retryingEvery: interval)
            return result
        } catch {
            try? await endAccess(ref, retryingEvery: interval)
            throw error
        }
    }

    /// Grants each page under the matching ref for the duration of `body`, all or nothing.
    ///
    /// OCaml: `Xen_os.Xen.Export.with_grants`
    public func withGrants<R>(
        _ refs: [GrantRef], to domain: DomainID, writable: Bool, pages: [PageBuffer],
        retryingEvery interval: Duration = .milliseconds(10),
        isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> R
    ) async throws -> R {
        guard refs.count == pages.count else { throw GrantTableError.invalidCount(pages.count) }
        var granted: [GrantRef] = []
        do {
            for (ref, page) in zip(refs, pages) {
                try grantAccess(ref, to: domain, writable: writable, page: page)
                granted.append(ref)
            }
            let result = try await body()
            for ref in granted { try await endAccess(ref, retryingEvery: interval) }
            return result
        } catch {
            for ref in granted { try? await endAccess(ref, retryingEvery: interval) }
            throw error
        }
    }

    /// Maps a grant for the duration of `body`, unmapping afterwards (also when `body` throws).
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
