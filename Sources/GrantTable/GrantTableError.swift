public import XenCore

/// Everything a grant-table operation can fail with, carrying the refs and domains involved.
///
/// OCaml: `Gnt.Gntshr.Interface_unavailable`, `Xen_os.Xen.Export.Busy`, `Grant_table_full`, and the `Failure`s
/// raised by `Gnttab.map_exn` (which carry no context there).
public enum GrantTableError: Error, Equatable, Sendable {
    /// No free grant reference (the non-blocking calls and `share_pages` report this instead of waiting).
    ///
    /// OCaml: `Gnt.Gntshr.share_pages` returning `None`
    case tableFull
    /// `get(count:)` asked for more references than the whole table holds, so it could never succeed.
    case requestTooLarge(requested: Int, capacity: Int)
    /// A negative count (or zero pages to share or map).
    case invalidCount(Int)
    /// Never thrown any more: a cancelled wait throws `CancellationError`, as Swift concurrency code expects
    /// (``GrantRefPool/get(count:timeout:)``, ``GrantTableBackend/endAccess(_:retryingEvery:timeout:releaseRef:)``).
    ///
    /// OCaml: `Lwt.Canceled` (what a cancelled mirage-xen wait raises)
    @available(*, deprecated, message: "a cancelled wait throws CancellationError; catch that instead")
    case cancelled
    /// A bounded wait ran out before what it waited for happened: the references were not taken, or the peer
    /// still maps the pages (their grants stay in place, so nothing is released under the peer).
    ///
    /// OCaml: none (mirage-xen waits without limit)
    case timedOut(GrantTableWait, after: Duration)
    /// The reference is outside the grant table.
    case invalidRef(GrantRef)
    /// `grantAccess` on a reference that already holds a grant.
    case alreadyGranted(GrantRef)
    /// `domain` has no active grant `ref` (never granted, or access ended).
    case notGranted(domain: DomainID, ref: GrantRef)
    /// The grant exists but names another domain: `mapper` may not map it.
    case wrongDomain(ref: GrantRef, grantee: DomainID, mapper: DomainID)
    /// A writable mapping of a read-only grant.
    case readOnly(domain: DomainID, ref: GrantRef)
    /// `endAccess` while the other side still has the page mapped.
    ///
    /// OCaml: `Xen_os.Xen.Export.try_end_access` failing with `Busy`
    case busy(GrantRef)
    /// The page is not page-aligned or shorter than a page.
    case invalidPage(offset: Int, count: Int)
    /// An unmap notification's byte lies outside the page.
    ///
    /// OCaml: none (C: `EINVAL` from `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`)
    case invalidNotifyOffset(Int)
    /// `mapv` of grants the simulator cannot present as one contiguous buffer (see `SimulatedGrantTable`).
    case notContiguous([GrantRef])
    /// The domain does not exist (or was destroyed).
    case noSuchDomain(DomainID)
    /// The device node could not be opened: Xen is not running here, the module is not loaded, or permission.
    ///
    /// OCaml: `Gnt.Gntshr.Interface_unavailable`
    case interfaceUnavailable(device: String, errno: Int32)
    /// A libxengnttab/libxengntshr call failed.
    case system(operation: String, errno: Int32)
    /// The operation needs kernel space (userspace cannot grant arbitrary pages; use `GntshrBackend`).
    case unsupported(operation: String)
    /// The interface was closed.
    case closed
    /// An explicit unmap or unshare while a `PageBuffer` view of the pages (a slice, a ring, a request in
    /// flight) is still alive. Nothing is released early: the pages are released when the last view goes.
    ///
    /// OCaml: none (the OCaml GC keeps the bigarray alive; an explicit unmap under a live view is undefined)
    case stillInUse(refs: [GrantRef])
}

/// What a bounded grant-table wait was waiting for when it ran out (``GrantTableError/timedOut(_:after:)``).
///
/// OCaml: none (mirage-xen's waits have no limit)
public enum GrantTableWait: Hashable, Sendable {
    /// `count` free references (``GrantRefPool/get(count:timeout:)``).
    ///
    /// OCaml: none (`Xen_os.Xen.Export.get_n` waits without limit)
    case freeRefs(count: Int)
    /// The peer to unmap these grants (``GrantTableBackend/endAccess(_:retryingEvery:timeout:releaseRef:)``
    /// and the scoped helpers that end access); each is still granted.
    ///
    /// OCaml: none (`Xen_os.Xen.Export.end_access` retries forever)
    case unmap(refs: [GrantRef])
}
