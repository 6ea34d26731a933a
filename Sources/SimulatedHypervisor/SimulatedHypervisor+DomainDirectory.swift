public import DomainUserdata
public import XenCore

/// The simulated hypervisor's domains as a `DomainDirectory` (DomainUserdata's seam): userdata of a
/// `SimulatedDomain` lives as long as the domain, and `destroyDomain` (with `domainReleases()` driving the
/// collector) removes it. It lives here, on the simulator's side of the seam, as the simulator's grant tables
/// and event channels implement GrantTable's and EventChannel's: DomainUserdata does not depend on the
/// simulator.
///
/// libxl: `libxl_domain_info` answered by the simulator instead of the hypervisor.
extension SimulatedHypervisor: DomainDirectory {
    /// OCaml/libxl: see `DomainDirectory.uuid(of:)`.
    public func uuid(of domid: DomainID) throws(UserdataError) -> DomainUUID? {
        domain(domid)?.uuid
    }
}
