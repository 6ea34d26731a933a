import CXen
import Synchronization
public import XenCore
import XenToolLog

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The real gntshr interface over libxengntshr (`/dev/xen/gntalloc`): allocate pages and grant them.
///
/// Opening fails with `.interfaceUnavailable` where `/dev/xen/gntalloc` is missing, without stderr noise.
/// Shares keep the handle open until unshared, so ``close()`` only stops new shares.
/// OCaml: `Gnt.Gntshr.interface`
public final class XenGntshr: UnmapNotifyingGntshr, @unchecked Sendable {
    // @unchecked: the handle is only used through libxengntshr's thread-safe ioctls; `closed` is a Mutex.
    private let handle: OpaquePointer
    private let closed = Mutex(false)

    /// The device node this backend opens.
    public static let device = "/dev/xen/gntalloc"

    /// Opens `/dev/xen/gntalloc`.
    ///
    /// OCaml: `Gnt.Gntshr.interface_open`
    public init() throws(GrantTableError) {
        guard let handle = xengntshr_open(QuietLogger.pointer, 0) else {
            throw .interfaceUnavailable(device: Self.device, errno: errno)
        }
        self.handle = handle
    }

    /// Opens the interface, passes it to `body`, and closes it before returning, on every path. Shares made
    /// in `body` stay valid until unshared.
    ///
    /// OCaml: `Gnt.Gntshr.with_gntshr`
    public static func withGntshr<R>(_ body: (XenGntshr) throws -> R) throws -> R {
        let interface = try XenGntshr()
        defer { interface.close() }
        return try body(interface)
    }

    /// The `async` form of ``withGntshr(_:)``: closes the interface on every path, cancellation included.
    ///
    /// OCaml: `Gnt.Gntshr.with_gntshr`
    public static func withGntshr<R>(
        isolation: isolated (any Actor)? = #isolation, _ body: (XenGntshr) async throws -> R
    ) async throws -> R {
        let interface = try XenGntshr()
        defer { interface.close() }
        return try await body(interface)
    }

    /// Renamed ``withGntshr(_:)``.
    ///
    /// OCaml: `Gnt.Gntshr.with_gntshr`
    @available(*, deprecated, renamed: "withGntshr(_:)")
    public static func with<R>(_ body: (XenGntshr) throws -> R) throws -> R {
        try withGntshr(body)
    }

    deinit { xengntshr_close(handle) }

    /// Stops new shares. OCaml: `Gnt.Gntshr.interface_close`
    public func close() { closed.withLock { $0 = true } }

    /// Allocates and shares pages with `xengntshr_share_pages`.
    ///
    /// OCaml: `Gnt.Gntshr.share_pages_exn`
    public func sharePages(with domain: DomainID, count: Int, writable: Bool) throws(GrantTableError) -> SharedPages {
        guard count > 0, count <= Int(Int32.max) / xenPageSize else { throw .invalidCount(count) }
        if closed.withLock({ $0 }) { throw .closed }
        var raw = [UInt32](repeating: 0, count: count)
        guard let address = xengntshr_share_pages(handle, UInt32(domain.rawValue), Int32(count), &raw, writable ? 1 : 0)
        else {
            let code = errno
            throw code == ENOSPC ? .tableFull : .system(operation: "xengntshr_share_pages", errno: code)
        }
        let bits = Int(bitPattern: address)
        // The share's storage unshares when its last view goes: no view can outlive the pages.
        return SharedPages(
            refs: raw.map(GrantRef.init(rawValue:)), address: address, domain: domain, writable: writable,
            unshare: { [self] () throws(GrantTableError) in try self.unshare(bits, count) }
        )
    }

    /// Allocates and shares one page with `xengntshr_share_page_notify`.
    ///
    /// OCaml: none; C: `xengntshr_share_page_notify`
    public func sharePage(
        with domain: DomainID, writable: Bool, notify: UnmapNotification
    ) throws(GrantTableError) -> SharedPages {
        guard let (offset, port) = notify.cArguments else { throw .invalidNotifyOffset(notify.byteOffset ?? -1) }
        if closed.withLock({ $0 }) { throw .closed }
        var ref: UInt32 = 0
        guard
            let address = xengntshr_share_page_notify(
                handle, UInt32(domain.rawValue), &ref, writable ? 1 : 0, offset, port)
        else {
            let code = errno
            throw code == ENOSPC ? .tableFull : .system(operation: "xengntshr_share_page_notify", errno: code)
        }
        let bits = Int(bitPattern: address)
        return SharedPages(
            refs: [GrantRef(rawValue: ref)], address: address, domain: domain, writable: writable,
            unshare: { [self] () throws(GrantTableError) in try self.unshare(bits, 1) }
        )
    }

    private func unshare(_ bits: Int, _ count: Int) throws(GrantTableError) {
        guard let address = UnsafeMutableRawPointer(bitPattern: bits) else { return }
        if xengntshr_unshare(handle, address, UInt32(count)) != 0 {
            throw .system(operation: "xengntshr_unshare", errno: errno)
        }
    }
}
