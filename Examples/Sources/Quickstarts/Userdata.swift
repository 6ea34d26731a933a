import DomainUserdata
import SimulatedHypervisor
import XenCore

/// Stores a toolstack's userdata for the guest under `root`, reads it back, destroys the guest and sweeps.
public func userdataQuickstart(
    root: String, hypervisor: SimulatedHypervisor, guest: SimulatedDomain
) async throws -> (value: [UInt8]?, removed: [UserdataCollector.Collected]) {
    let store = UserdataStore(root: root, domains: hypervisor)  // on Xen: try XenControlDomainDirectory()
    let id = try UserdataID(validating: "my-toolstack")
    try await store.store(domid: guest.id, userid: id, data: Array("owner=alice".utf8))
    let value = try await store.retrieve(domid: guest.id, userid: id)  // nil when there is none
    hypervisor.destroyDomain(guest.id)
    let removed = try UserdataCollector(store: store).sweep()  // the dead domain's files go
    return (value, removed)
}
