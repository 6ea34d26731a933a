import Synchronization
public import XenCore

/// The one owner of a grant mapping's or share's memory: a ``PageStorage`` whose `deinit` releases the pages
/// (unmap or unshare), so they stay valid while any ``PageBuffer`` view of them is alive. An explicit release
/// drops the owner's reference and succeeds only when that was the last one (the release then runs at once,
/// its error reported); with views still alive it throws ``GrantTableError/stillInUse(refs:)`` and the
/// release waits for the last view.
final class PagesOwner: Sendable {
    private let storage: Mutex<PageStorage?>
    /// The release's outcome, written by the storage's `deinit` (whichever thread drops the last view).
    private let outcome = ReleaseOutcome()
    let refs: [GrantRef]

    /// Owns `byteCount` bytes at `base`; `release` runs exactly once, when the last view is gone.
    init(
        base: UnsafeMutableRawPointer, byteCount: Int, refs: [GrantRef], shareable: Bool = false,
        release: @escaping @Sendable () throws(GrantTableError) -> Void
    ) {
        self.refs = refs
        let outcome = self.outcome
        let run: @Sendable (UnsafeMutableRawPointer, Int) -> Void = { _, _ in
            let result: Result<Void, GrantTableError>
            do throws(GrantTableError) {
                try release()
                result = .success(())
            } catch {
                result = .failure(error)
            }
            outcome.value.withLock { $0 = result }
        }
        storage = Mutex(
            shareable
                ? PageStorage(borrowingShared: base, byteCount: byteCount, release: run)
                : PageStorage(borrowing: base, byteCount: byteCount, release: run))
    }

    /// A view of all the pages. Traps once released: a released mapping has no memory to show.
    var buffer: PageBuffer {
        guard let storage = storage.withLock({ $0 }) else {
            preconditionFailure("grant pages used after unmap/unshare (refs \(refs.map(\.rawValue)))")
        }
        return PageBuffer(storage: storage)
    }

    /// True once the owner let go (released, or waiting for the last view).
    var isReleased: Bool { storage.withLock { $0 == nil } }

    /// Lets go of the pages: releases them now if no view is alive, else throws `.stillInUse`.
    /// Idempotent: later calls do nothing.
    func release() throws(GrantTableError) {
        var taken: PageStorage? = storage.withLock { slot in
            defer { slot = nil }
            return slot
        }
        guard taken != nil else { return }
        // Nobody can copy a view from us any more: unique means no view is alive anywhere.
        let unique = isKnownUniquelyReferenced(&taken)
        taken = nil  // the storage's deinit runs here when unique, recording the outcome
        guard unique else { throw .stillInUse(refs: refs) }
        if case .failure(let error) = outcome.value.withLock({ $0 }) { throw error }
    }
}

/// Where a release run by a storage's `deinit` leaves its result for an explicit release to report.
final class ReleaseOutcome: Sendable {
    let value = Mutex<Result<Void, GrantTableError>?>(nil)
}

// MARK: - Import side

/// Foreign pages mapped into this domain: one grant, or several presented as one contiguous buffer.
///
/// The mapping lives as long as anything can reach its memory: every `PageBuffer` view of ``buffer`` (a
/// slice, a ring over it, a request in flight) keeps it mapped, and the pages are unmapped when the last one
/// goes. Non-copyable so that it has one owner: ``unmap()`` consumes it and reports errors, and
/// ``GrantTableError/stillInUse(refs:)`` if views are still alive (the unmap then follows the last of them);
/// dropping it without `unmap()` also unmaps once no view is left. To keep a mapping in a class, wrap it in
/// a ``GrantMappingHandle``.
///
/// OCaml: `Gnt.Gnttab.Local_mapping.t`
public struct GrantMapping: ~Copyable, Sendable {
    /// The domain that granted the pages.
    public let domain: DomainID
    /// The grant references mapped, in buffer order.
    public let refs: [GrantRef]
    /// Whether the mapping may be written.
    public let writable: Bool
    let owner: PagesOwner

    /// A mapping of `count * 4096` bytes at `address`, for backend implementations: `unmap` runs exactly
    /// once, when the mapping and every view of it are gone (its error is reported to an explicit
    /// ``unmap()``).
    ///
    /// OCaml: none (backends build `Local_mapping.t` internally)
    public init(
        address: UnsafeMutableRawPointer, domain: DomainID, refs: [GrantRef], writable: Bool,
        unmap: @escaping @Sendable () throws(GrantTableError) -> Void
    ) {
        self.init(address: address, domain: domain, refs: refs, writable: writable, shareable: false, unmap: unmap)
    }

    package init(
        address: UnsafeMutableRawPointer, domain: DomainID, refs: [GrantRef], writable: Bool, shareable: Bool,
        unmap: @escaping @Sendable () throws(GrantTableError) -> Void
    ) {
        self.domain = domain
        self.refs = refs
        self.writable = writable
        self.owner = PagesOwner(
            base: address, byteCount: refs.count * xenPageSize, refs: refs, shareable: shareable, release: unmap)
    }

    /// The mapped bytes (`refs.count * 4096`), sharing memory with the granting domain. Each view keeps the
    /// pages mapped.
    ///
    /// OCaml: `Gnt.Gnttab.Local_mapping.to_buf`
    public var buffer: PageBuffer { owner.buffer }

    /// Unmaps the pages. Throws ``GrantTableError/stillInUse(refs:)`` while a view of ``buffer`` is alive
    /// (the pages are then unmapped when it goes) or the backend's error.
    ///
    /// OCaml: `Gnt.Gnttab.unmap_exn`
    public consuming func unmap() throws(GrantTableError) {
        try owner.release()
    }
}

/// A class holding a ``GrantMapping``, for owners that are themselves classes or actors (a ring, a backend).
///
/// ``unmap()`` is idempotent here; dropping the handle lets go of the mapping too (unmapped once no view is
/// left). ``buffer`` traps after ``unmap()``.
/// OCaml: none (an OCaml record field holds the mapping directly)
public final class GrantMappingHandle: Sendable {
    /// The domain that granted the pages.
    public let domain: DomainID
    /// The grant references mapped.
    public let refs: [GrantRef]
    private let owner: PagesOwner

    /// Takes ownership of `mapping`.
    ///
    /// OCaml: none (no ownership to transfer there)
    public init(_ mapping: consuming GrantMapping) {
        domain = mapping.domain
        refs = mapping.refs
        owner = mapping.owner
    }

    /// A view of the mapped bytes (keeps them mapped while it lives).
    ///
    /// OCaml: `Gnt.Gnttab.Local_mapping.to_buf`
    public var buffer: PageBuffer { owner.buffer }

    /// True once unmapped (or let go, waiting for the last view).
    public var isUnmapped: Bool { owner.isReleased }

    /// Unmaps the pages the first time it is called (``GrantTableError/stillInUse(refs:)`` while views are
    /// alive: the unmap then follows the last of them); later calls do nothing.
    ///
    /// OCaml: `Gnt.Gnttab.unmap_exn`
    public func unmap() throws(GrantTableError) { try owner.release() }
}

// MARK: - gntshr

/// Pages allocated in this domain and shared with another through gntshr (`/dev/xen/gntalloc`).
///
/// Like a ``GrantMapping``, the share lives while any `PageBuffer` view of ``buffer`` does. Non-copyable:
/// ``unshare()`` consumes it (``GrantTableError/stillInUse(refs:)`` while views are alive), and dropping it
/// unshares once no view is left. As with gntalloc, if the other side still maps the pages, the grants are
/// only revoked once it unmaps.
/// OCaml: `Gnt.Gntshr.share` (`{ refs; mapping }`)
public struct SharedPages: ~Copyable, Sendable {
    /// The grant references to publish to the other domain (e.g. in xenstore), one per page.
    public let refs: [GrantRef]
    /// The domain the pages are shared with.
    public let domain: DomainID
    /// Whether that domain may write.
    public let writable: Bool
    let owner: PagesOwner

    /// A share of `refs.count` pages at `address`, for backend implementations: `unshare` runs exactly once,
    /// when the share and every view of it are gone.
    ///
    /// OCaml: none (backends build `Gntshr.share` internally)
    public init(
        refs: [GrantRef], address: UnsafeMutableRawPointer, domain: DomainID, writable: Bool,
        unshare: @escaping @Sendable () throws(GrantTableError) -> Void
    ) {
        self.init(refs: refs, address: address, domain: domain, writable: writable, shareable: false, unshare: unshare)
    }

    package init(
        refs: [GrantRef], address: UnsafeMutableRawPointer, domain: DomainID, writable: Bool, shareable: Bool,
        unshare: @escaping @Sendable () throws(GrantTableError) -> Void
    ) {
        self.refs = refs
        self.domain = domain
        self.writable = writable
        self.owner = PagesOwner(
            base: address, byteCount: refs.count * xenPageSize, refs: refs, shareable: shareable, release: unshare)
    }

    /// The shared memory, `refs.count` contiguous pages; each view keeps the share alive.
    ///
    /// OCaml: `Gnt.Gntshr.share.mapping`
    public var buffer: PageBuffer { owner.buffer }

    /// Stops sharing (revoking the grants and freeing the memory once the other side has unmapped). Throws
    /// ``GrantTableError/stillInUse(refs:)`` while a view of ``buffer`` is alive.
    ///
    /// OCaml: `Gnt.Gntshr.munmap_exn`
    public consuming func unshare() throws(GrantTableError) {
        try owner.release()
    }
}

/// A class holding ``SharedPages`` for class or actor owners; ``unshare()`` is idempotent, ``buffer`` traps
/// after it.
///
/// OCaml: none (an OCaml record field holds the share directly)
public final class SharedPagesHandle: Sendable {
    /// The grant references, one per page.
    public let refs: [GrantRef]
    /// The domain the pages are shared with.
    public let domain: DomainID
    private let owner: PagesOwner

    /// Takes ownership of `pages`.
    ///
    /// OCaml: none (no ownership to transfer there)
    public init(_ pages: consuming SharedPages) {
        refs = pages.refs
        domain = pages.domain
        owner = pages.owner
    }

    /// A view of the shared memory (keeps the share alive while it lives).
    ///
    /// OCaml: `Gnt.Gntshr.share.mapping`
    public var buffer: PageBuffer { owner.buffer }

    /// True once unshared (or let go, waiting for the last view).
    public var isUnshared: Bool { owner.isReleased }

    /// Unshares the first time it is called (``GrantTableError/stillInUse(refs:)`` while views are alive);
    /// later calls do nothing.
    ///
    /// OCaml: `Gnt.Gntshr.munmap_exn`
    public func unshare() throws(GrantTableError) { try owner.release() }
}
