public import SimulatedHypervisor
public import XenCore

/// The simulated hypervisor's domains as a domain directory: userdata of a `SimulatedDomain` lives as long as
/// the domain, and `destroyDomain` (with `domainReleases()` driving the collector) removes it.
///
/// libxl: `libxl_domain_info` answered by the simulator instead of the hypervisor.
extension SimulatedHypervisor: DomainDirectory {
    /// OCaml/libxl: see `DomainDirectory.uuid(of:)`.
    public func uuid(of domid: DomainID) throws(UserdataError) -> DomainUUID? {
        domain(domid)?.uuid
    }
}
