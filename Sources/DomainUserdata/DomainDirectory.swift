import Synchronization
public import XenCore

/// Where userdata learns whether a domain exists and what its UUID is. Calls may block briefly (a hypercall),
/// so callers keep them off the cooperative pool, as the store does.
///
/// libxl: `libxl_domain_info` (used by `libxl__userdata_path` and the post-lock re-check).
public protocol DomainDirectory: Sendable {
    /// The UUID of the live domain `domid`, or nil when there is no such domain.
    ///
    /// libxl: `libxl_domain_info(ctx, &info, domid)` → `info.uuid`, `ERROR_DOMAIN_NOTFOUND` → nil.
    func uuid(of domid: DomainID) throws(UserdataError) -> DomainUUID?
}

// MARK: - In-memory directory

/// A domain directory held in memory: the simulated backend for tests, the demo and hosts without Xen.
/// Domains are created and destroyed explicitly; a domid may be reused with a new UUID.
///
/// libxl: not in libxl (the hypervisor's domain list); the simulated counterpart of `XenControlDomainDirectory`.
public final class InMemoryDomainDirectory: DomainDirectory {
    private let domains: Mutex<[DomainID: DomainUUID]>

    /// A directory holding `domains`.
    ///
    /// libxl: not in libxl (simulation).
    public init(_ domains: [DomainID: DomainUUID] = [:]) {
        self.domains = Mutex(domains)
    }

    /// Adds (or replaces, modelling domid reuse) a domain.
    ///
    /// libxl: not in libxl (stands in for `libxl_domain_create_new`).
    public func create(_ domid: DomainID, uuid: DomainUUID) {
        domains.withLock { $0[domid] = uuid }
    }

    /// Removes a domain, as the hypervisor does once it is destroyed.
    ///
    /// libxl: not in libxl (stands in for `xc_domain_destroy`).
    public func destroy(_ domid: DomainID) {
        _ = domains.withLock { $0.removeValue(forKey: domid) }
    }

    /// The live domains.
    ///
    /// libxl: not in libxl (stands in for `libxl_list_domain`).
    public var all: [DomainID: DomainUUID] { domains.withLock { $0 } }

    /// OCaml/libxl: see `DomainDirectory.uuid(of:)`.
    public func uuid(of domid: DomainID) throws(UserdataError) -> DomainUUID? {
        domains.withLock { $0[domid] }
    }
}
