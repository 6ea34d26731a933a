public import SimulatedHypervisor
public import Vchan

extension SimulatedHost {
    /// What a vchan endpoint in `domain` works with: a xenstore connection of its own and the domain's event
    /// channels, gntshr and grant table. With `explicitDomid` false the endpoint reads its domain ID from
    /// xenstore's `domid`, as libxenvchan does (``makeGuest(name:introduce:)`` writes it).
    public func vchanEnvironment(for domain: SimulatedDomain, explicitDomid: Bool = true) -> VchanEnvironment {
        VchanEnvironment(
            xenstore: connect(domain.id), eventChannel: domain.eventChannel, gntshr: domain.openGntshr(),
            grantTable: domain.grantTable, localDomain: explicitDomid ? domain.id : nil)
    }
}
