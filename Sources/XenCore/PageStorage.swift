#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Memory that a ``PageBuffer`` views. It never moves, and it stays valid while any buffer refers to it.
///
/// Every ``PageBuffer`` holds a strong reference to its storage, so the storage is the owner of the memory's
/// lifetime: whatever releases the memory (`free`, `munmap`, a grant unmap, a gntshr unshare) runs in
/// `deinit`, when the last view is gone, and never earlier. A grant mapping or a share handed out by a
/// GrantTable backend is such a storage, which is what makes a use after unmap impossible through a
/// ``PageBuffer``: code that keeps a view keeps the mapping. (A raw pointer taken from ``base`` or
/// ``PageBuffer/pointer`` is valid only while a view is alive: keep the view, not the pointer.)
///
/// OCaml: none (the OCaml GC keeps a `Cstruct.t`'s bigarray alive the same way; the unmap is explicit there)
public final class PageStorage: @unchecked Sendable {
    // @unchecked: every stored property is immutable; the memory itself is what views share.

    /// The first byte. Page-aligned for allocated storage.
    public let base: UnsafeMutableRawPointer
    /// Bytes available from `base`.
    public let byteCount: Int
    /// Whether the memory is a shared (`MAP_SHARED`) mapping that can be mapped a second time at another
    /// address (``PageMemory/alias(_:byteCount:)``): what the simulated hypervisor needs to give a grant's
    /// mapper its own address, which it can fence when the mapping goes.
    package let isShareable: Bool
    private let release: (@Sendable (UnsafeMutableRawPointer, Int) -> Void)?
    private let owner: AnyObject?

    /// Allocates `pages` whole pages aligned to 4096, zero-filled (heap memory, freed when the last view goes).
    ///
    /// OCaml: `Io_page.get`
    public init(pages: Int) {
        precondition(pages > 0, "PageStorage needs at least one page")
        let size = pages * xenPageSize
        var raw: UnsafeMutableRawPointer?
        let rc = posix_memalign(&raw, xenPageSize, size)
        guard rc == 0, let raw else { fatalError("posix_memalign(\(size)) failed: \(rc)") }
        memset(raw, 0, size)
        self.base = raw
        self.byteCount = size
        self.isShareable = false
        self.release = { pointer, _ in free(pointer) }
        self.owner = nil
    }

    /// Allocates `pages` zero-filled pages as a shared anonymous mapping (unmapped when the last view goes),
    /// which can be mapped again elsewhere: the memory a simulated domain grants from.
    ///
    /// OCaml: `Io_page.get` (as the simulator hands it out)
    package init(sharedPages pages: Int) {
        precondition(pages > 0, "PageStorage needs at least one page")
        let size = pages * xenPageSize
        guard let raw = PageMemory.mapShared(byteCount: size) else {
            fatalError("mmap(\(size), MAP_SHARED | MAP_ANONYMOUS) failed: errno \(errno)")
        }
        self.base = raw
        self.byteCount = size
        self.isShareable = true
        self.release = { pointer, count in _ = munmap(pointer, count) }
        self.owner = nil
    }

    /// Views memory owned elsewhere. `owner` is retained while this storage lives, and `release` runs exactly
    /// once, when the last buffer viewing this storage is gone (a grant backend passes its unmap here).
    ///
    /// OCaml: `Cstruct.of_bigarray` over memory someone else maps
    public init(
        borrowing base: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject? = nil,
        release: (@Sendable (UnsafeMutableRawPointer, Int) -> Void)? = nil
    ) {
        self.base = base
        self.byteCount = byteCount
        self.isShareable = false
        self.owner = owner
        self.release = release
    }

    /// Like ``init(borrowing:byteCount:owner:release:)``, for memory that is itself a shared mapping (a
    /// simulated grant mapping, which may be granted on).
    package init(
        borrowingShared base: UnsafeMutableRawPointer, byteCount: Int,
        release: @escaping @Sendable (UnsafeMutableRawPointer, Int) -> Void
    ) {
        self.base = base
        self.byteCount = byteCount
        self.isShareable = true
        self.owner = nil
        self.release = release
    }

    deinit { release?(base, byteCount) }
}

/// Page-granular memory mappings: what the simulated hypervisor does to imitate grant mappings (a second
/// address for the same pages) and to fence released ones (the address turned inaccessible and never handed
/// out again, so a late access traps instead of touching whatever the allocator put there).
///
/// OCaml: none (mirage-xen maps with hypercalls)
package enum PageMemory {
    /// A fresh `MAP_SHARED | MAP_ANONYMOUS` read-write mapping of `byteCount` bytes, or nil (errno set).
    package static func mapShared(byteCount: Int) -> UnsafeMutableRawPointer? {
        let raw = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        return raw == failed ? nil : raw
    }

    /// Maps the shared pages at `source` (whole pages, from a shareable storage) a second time, at `into`
    /// (page-aligned, `byteCount` bytes reserved by ``reserve(byteCount:)``). Both addresses then show the
    /// same memory. False (errno set) when the kernel refuses.
    package static func alias(_ source: UnsafeMutableRawPointer, byteCount: Int, into target: UnsafeMutableRawPointer)
        -> Bool
    {
        // mremap with old_size 0 duplicates a shared mapping: mremap(2), "If the value of old_size is zero".
        let placed = linuxMremap(source, 0, byteCount, mremapMayMove | mremapFixed, target)
        return placed == target
    }

    /// Reserves `byteCount` bytes of address space (inaccessible until pages are aliased into it).
    package static func reserve(byteCount: Int) -> UnsafeMutableRawPointer? {
        let raw = mmap(nil, byteCount, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        return raw == failed ? nil : raw
    }

    /// Replaces `byteCount` bytes at `base` with an inaccessible mapping that is never removed: any later
    /// load or store there raises SIGSEGV, and no allocator can be handed the address again. True on success.
    @discardableResult
    package static func fence(_ base: UnsafeMutableRawPointer, byteCount: Int) -> Bool {
        let raw = mmap(base, byteCount, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0)
        return raw == base
    }

    private static var failed: UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: -1) }
    private static let mremapMayMove: Int32 = 1  // MREMAP_MAYMOVE
    private static let mremapFixed: Int32 = 2  // MREMAP_FIXED
}

// mremap(2) is variadic in C (the new address comes only with MREMAP_FIXED), so Swift does not import it;
// with five integer/pointer arguments the variadic and fixed calling conventions agree on Linux.
@_silgen_name("mremap")
private func linuxMremap(
    _ oldAddress: UnsafeMutableRawPointer?, _ oldSize: Int, _ newSize: Int, _ flags: Int32,
    _ newAddress: UnsafeMutableRawPointer?
) -> UnsafeMutableRawPointer?
