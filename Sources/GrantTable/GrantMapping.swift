import Synchronization
public import XenCore

/// Runs a release action at most once: explicitly (with its error reported) or, failing that, on deinit.
final class ReleaseOnce: Sendable {
    private let action: Mutex<(@Sendable () throws(GrantTableError) -> Void)?>

    init(_ action: @escaping @Sendable () throws(GrantTableError) -> Void) { self.action = Mutex(action) }

    func run() throws(GrantTableError) {
        let pending = action.withLock { slot in
            defer { slot = nil }
            return slot
        }
        try pending?()
    }

    var isDone: Bool { action.withLock { $0 == nil } }

    // A value dropped without an explicit release must not leak the mapping or the grant: release it now.
    deinit { try? run() }
}

// MARK: - Import side

/// Foreign pages mapped into this domain: one grant, or several presented as one contiguous buffer.
///
/// Non-copyable so the unmap happens exactly once: call ``unmap()`` (which consumes the value and reports
/// errors) or let the value go out of scope (unmapped then, errors ignored). To keep a mapping in a class,
/// wrap it in a ``GrantMappingHandle``. On the real backend ``buffer`` must not be used after unmapping.
///
/// OCaml: `Gnt.Gnttab.Local_mapping.t`
public struct GrantMapping: ~Copyable, Sendable {
    /// The mapped bytes (`count * 4096`), sharing memory with the granting domain.
    ///
    /// OCaml: `Gnt.Gnttab.Local_mapping.to_buf`
    public let buffer: PageBuffer
    /// The domain that granted the pages.
    public let domain: DomainID
    /// The grant references mapped, in buffer order.
    public let refs: [GrantRef]
    /// Whether the mapping may be written.
    public let writable: Bool
    let release: ReleaseOnce

    /// Creates a mapping value; for backend implementations. `unmap` runs exactly once.
    ///
    /// Not in OCaml (backends build `Local_mapping.t` internally).
    public init(
        buffer: PageBuffer, domain: DomainID, refs: [GrantRef], writable: Bool,
        unmap: @escaping @Sendable () throws(GrantTableError) -> Void
    ) {
        self.buffer = buffer
        self.domain = domain
        self.refs = refs
        self.writable = writable
        self.release = ReleaseOnce(unmap)
    }

    /// Unmaps the pages; the value is consumed, so it cannot be unmapped twice.
    ///
    /// OCaml: `Gnt.Gnttab.unmap_exn`
    public consuming func unmap() throws(GrantTableError) {
        try release.run()
    }
}

/// A class holding a ``GrantMapping``, for owners that are themselves classes or actors (a ring, a backend).
///
/// ``unmap()`` is idempotent here; the mapping is also unmapped when the handle is deinitialised.
/// Not in OCaml (an OCaml record field holds the mapping directly).
public final class GrantMappingHandle: Sendable {
    /// The mapped bytes.
    public let buffer: PageBuffer
    /// The domain that granted the pages.
    public let domain: DomainID
    /// The grant references mapped.
    public let refs: [GrantRef]
    private let release: ReleaseOnce

    /// Takes ownership of `mapping`.
    ///
    /// Not in OCaml (no ownership to transfer there).
    public init(_ mapping: consuming GrantMapping) {
        buffer = mapping.buffer
        domain = mapping.domain
        refs = mapping.refs
        release = mapping.release
    }

    /// True once unmapped.
    public var isUnmapped: Bool { release.isDone }

    /// Unmaps the pages the first time it is called; later calls do nothing.
    ///
    /// OCaml: `Gnt.Gnttab.unmap_exn`
    public func unmap() throws(GrantTableError) { try release.run() }
}

// MARK: - gntshr

/// Pages allocated in this domain and shared with another through gntshr (`/dev/xen/gntalloc`).
///
/// Non-copyable: ``unshare()`` consumes it, and dropping it unshares too. As with gntalloc, if the other side
/// still maps the pages, the grants are only revoked once it unmaps.
/// OCaml: `Gnt.Gntshr.share` (`{ refs; mapping }`)
public struct SharedPages: ~Copyable, Sendable {
    /// The grant references to publish to the other domain (e.g. in xenstore), one per page.
    public let refs: [GrantRef]
    /// The shared memory, `refs.count` contiguous pages.
    public let buffer: PageBuffer
    /// The domain the pages are shared with.
    public let domain: DomainID
    /// Whether that domain may write.
    public let writable: Bool
    let release: ReleaseOnce

    /// Creates a share value; for backend implementations. `unshare` runs exactly once.
    ///
    /// Not in OCaml (backends build `Gntshr.share` internally).
    public init(
        refs: [GrantRef], buffer: PageBuffer, domain: DomainID, writable: Bool,
        unshare: @escaping @Sendable () throws(GrantTableError) -> Void
    ) {
        self.refs = refs
        self.buffer = buffer
        self.domain = domain
        self.writable = writable
        self.release = ReleaseOnce(unshare)
    }

    /// Stops sharing (revoking the grants and freeing the memory once the other side has unmapped).
    ///
    /// OCaml: `Gnt.Gntshr.munmap_exn`
    public consuming func unshare() throws(GrantTableError) {
        try release.run()
    }
}

/// A class holding ``SharedPages`` for class or actor owners; ``unshare()`` is idempotent.
///
/// Not in OCaml (an OCaml record field holds the share directly).
public final class SharedPagesHandle: Sendable {
    /// The grant references, one per page.
    public let refs: [GrantRef]
    /// The shared memory.
    public let buffer: PageBuffer
    /// The domain the pages are shared with.
    public let domain: DomainID
    private let release: ReleaseOnce

    /// Takes ownership of `pages`.
    ///
    /// Not in OCaml (no ownership to transfer there).
    public init(_ pages: consuming SharedPages) {
        refs = pages.refs
        buffer = pages.buffer
        domain = pages.domain
        release = pages.release
    }

    /// True once unshared.
    public var isUnshared: Bool { release.isDone }

    /// Unshares the first time it is called; later calls do nothing.
    ///
    /// OCaml: `Gnt.Gntshr.munmap_exn`
    public func unshare() throws(GrantTableError) { try release.run() }
}
