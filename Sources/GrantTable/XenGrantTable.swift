import CXen
public import XenCore
import XenToolLog

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The real import side over libxengnttab (`/dev/xen/gntdev`): map grants other domains made to us.
///
/// Opening fails with `.interfaceUnavailable` where `/dev/xen/gntdev` is missing (no Xen, or the
/// `xen-gntdev` module not loaded), without libxen writing to stderr. Export (`grantAccess`) needs kernel
/// space and throws `.unsupported`: share memory with ``XenGntshr`` instead. Mappings keep the handle open.
/// OCaml: `Gnt.Gnttab.interface` (Unix stubs over `xc_gnttab_*`)
public final class XenGrantTable: UnmapNotifyingGrantTable, @unchecked Sendable {
    // @unchecked: the handle is only used through libxengnttab calls, which are thread-safe ioctls.
    let handle: OpaquePointer

    /// The device node this backend opens.
    public static let device = "/dev/xen/gntdev"

    /// `DOMID_SELF`: the real backend does not know its own domid (read xenstore's `domid` for that).
    public let domain = DomainID.`self`

    /// Unused by the real backend (export needs kernel space); kept so the protocol is uniform.
    public let refs = GrantRefPool()

    /// Opens `/dev/xen/gntdev`.
    ///
    /// OCaml: `Gnt.Gnttab.interface_open`
    public init() throws(GrantTableError) {
        guard let handle = xengnttab_open(QuietLogger.pointer, 0) else {
            throw .interfaceUnavailable(device: Self.device, errno: errno)
        }
        self.handle = handle
    }

    /// Opens the interface, runs `body`, and lets go of it on every path (closed once the last mapping made
    /// through it is gone).
    ///
    /// OCaml: `Gnt.Gnttab.with_gnttab`
    public static func withGrantTable<R>(_ body: (XenGrantTable) throws -> R) throws -> R {
        try body(XenGrantTable())
    }

    /// The `async` form of ``withGrantTable(_:)``: lets go of the interface on every path, cancellation
    /// included.
    ///
    /// OCaml: `Gnt.Gnttab.with_gnttab`
    public static func withGrantTable<R>(
        isolation: isolated (any Actor)? = #isolation, _ body: (XenGrantTable) async throws -> R
    ) async throws -> R {
        try await body(XenGrantTable())
    }

    /// Renamed ``withGrantTable(_:)``.
    ///
    /// OCaml: `Gnt.Gnttab.with_gnttab`
    @available(*, deprecated, renamed: "withGrantTable(_:)")
    public static func with<R>(_ body: (XenGrantTable) throws -> R) throws -> R {
        try withGrantTable(body)
    }

    deinit { xengnttab_close(handle) }

    /// Always throws `.unsupported`: userspace cannot grant arbitrary pages (use ``XenGntshr``).
    ///
    /// OCaml: `Gnt.Gntshr.grant_access` ("only available in kernelspace")
    public func grantAccess(
        _ ref: GrantRef, to domain: DomainID, writable: Bool, page: PageBuffer
    ) throws(GrantTableError) {
        throw .unsupported(operation: "grant_access")
    }

    /// Always throws `.unsupported` (see ``grantAccess(_:to:writable:page:)``).
    ///
    /// OCaml: `Gnt.Gntshr.end_access`
    public func endAccess(_ ref: GrantRef) throws(GrantTableError) {
        throw .unsupported(operation: "end_access")
    }

    /// Maps one grant with `xengnttab_map_grant_ref`.
    ///
    /// OCaml: `Gnt.Gnttab.map_exn`
    public func map(domain: DomainID, ref: GrantRef, writable: Bool) throws(GrantTableError) -> GrantMapping {
        try mapv(domain: domain, refs: [ref], writable: writable)
    }

    /// Maps grants contiguously with `xengnttab_map_grant_refs` (all or nothing).
    ///
    /// OCaml: `Gnt.Gnttab.mapv_exn`
    public func mapv(domain: DomainID, refs: [GrantRef], writable: Bool) throws(GrantTableError) -> GrantMapping {
        guard !refs.isEmpty, refs.count <= Int(UInt32.max) else { throw .invalidCount(refs.count) }
        let prot = writable ? PROT_READ | PROT_WRITE : PROT_READ
        var domids = [UInt32](repeating: UInt32(domain.rawValue), count: refs.count)
        var raw = refs.map(\.rawValue)
        let address: UnsafeMutableRawPointer? =
            refs.count == 1
            ? xengnttab_map_grant_ref(handle, UInt32(domain.rawValue), raw[0], prot)
            : xengnttab_map_grant_refs(handle, UInt32(refs.count), &domids, &raw, prot)
        guard let address else {
            throw .system(
                operation: refs.count == 1 ? "xengnttab_map_grant_ref" : "xengnttab_map_grant_refs", errno: errno)
        }
        let count = refs.count
        let bits = Int(bitPattern: address)
        // The mapping's storage unmaps when its last view goes: no view can outlive the pages.
        return GrantMapping(
            address: address, domain: domain, refs: refs, writable: writable,
            unmap: { [self] () throws(GrantTableError) in try self.unmap(bits, count) }
        )
    }

    /// Maps one grant with `xengnttab_map_grant_ref_notify`.
    ///
    /// OCaml: none; C: `xengnttab_map_grant_ref_notify`
    public func map(
        domain: DomainID, ref: GrantRef, writable: Bool, notify: UnmapNotification
    ) throws(GrantTableError) -> GrantMapping {
        guard let (offset, port) = notify.cArguments else { throw .invalidNotifyOffset(notify.byteOffset ?? -1) }
        let prot = writable ? PROT_READ | PROT_WRITE : PROT_READ
        guard
            let address = xengnttab_map_grant_ref_notify(
                handle, UInt32(domain.rawValue), ref.rawValue, prot, offset, port)
        else {
            throw .system(operation: "xengnttab_map_grant_ref_notify", errno: errno)
        }
        let bits = Int(bitPattern: address)
        return GrantMapping(
            address: address, domain: domain, refs: [ref], writable: writable,
            unmap: { [self] () throws(GrantTableError) in try self.unmap(bits, 1) }
        )
    }

    private func unmap(_ bits: Int, _ count: Int) throws(GrantTableError) {
        guard let address = UnsafeMutableRawPointer(bitPattern: bits) else { return }
        if xengnttab_unmap(handle, address, UInt32(count)) != 0 {
            throw .system(operation: "xengnttab_unmap", errno: errno)
        }
    }
}
