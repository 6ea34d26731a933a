import CXen
import Glibc
import Synchronization
public import XenCore
import XenToolLog

/// The real domain directory: asks the hypervisor through libxenctrl. Opening fails with
/// `UserdataError.hypervisorUnavailable` where there is no Xen (or no privilege), so nothing silently pretends.
///
/// libxl: `ctx->xch` (`xc_interface_open`) and `libxl_domain_info` (`xc_domain_getinfolist`, one entry).
public final class XenControlDomainDirectory: DomainDirectory {
    /// The `xc_interface *`; libxenctrl handles are not documented as thread-safe, so calls are serialised.
    private let handle: Mutex<OpaquePointer>

    /// Opens the control interface.
    ///
    /// libxl: `xc_interface_open(ctx->lg, ctx->lg, 0)` in `libxl_ctx_alloc`.
    public init() throws(UserdataError) {
        // Silent, like the grant and event channel handles: a host without Xen gets a typed error, no stderr.
        guard let xch = xc_interface_open(QuietLogger.pointer, QuietLogger.pointer, 0) else {
            throw .hypervisorUnavailable(errno: errno == 0 ? ENOENT : errno)
        }
        self.handle = Mutex(xch)
    }

    deinit {
        handle.withLock { _ = xc_interface_close($0) }
    }

    /// OCaml/libxl: see `DomainDirectory.uuid(of:)`; mirrors `libxl_domain_info`, which also asks for the
    /// first domain at or after `domid` and checks that it is `domid`.
    public func uuid(of domid: DomainID) throws(UserdataError) -> DomainUUID? {
        let result: Result<DomainUUID?, UserdataError> = handle.withLock { xch in
            var info = xc_domaininfo_t()
            let count = xc_domain_getinfolist(xch, UInt32(domid.rawValue), 1, &info)
            if count < 0 {
                let code = errno
                // ESRCH: no domain at or after domid; libxl maps it to ERROR_DOMAIN_NOTFOUND.
                return code == ESRCH ? .success(nil) : .failure(.domainInfoFailed(domid, errno: code))
            }
            guard count == 1, info.domain == domid.rawValue else { return .success(nil) }
            let bytes = withUnsafeBytes(of: info.handle) { Array($0) }
            return .success(DomainUUID(bytes: bytes))
        }
        return try result.get()
    }
}
