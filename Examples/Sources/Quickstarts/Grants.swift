import EventChannel
import GrantTable
import SimulatedHypervisor
import XenCore

/// A guest shares a page with dom0, dom0 maps it and reads it; the guest notifies dom0 on an event channel.
public func grantsQuickstart(
    hypervisor: SimulatedHypervisor
) async throws -> (guest: SimulatedDomain, value: UInt32) {
    let guest = try hypervisor.createDomain(name: "guest")
    let shared = try guest.openGntshr().sharePages(with: .dom0, count: 1, writable: true)  // the guest shares
    shared.buffer.setUInt32(0xC0FFEE, at: 0)
    let mapping = try hypervisor.dom0.grantTable.map(domain: guest.id, ref: shared.refs[0], writable: true)
    let value = mapping.buffer.uint32(at: 0)  // dom0 maps and reads 0xC0FFEE
    let port = try hypervisor.dom0.eventChannel.bindUnboundPort(remote: guest.id)
    let guestPort = try guest.eventChannel.bindInterdomain(remote: .dom0, remotePort: port)
    var wakeups = hypervisor.dom0.eventChannel.notifications(port).makeAsyncIterator()
    try guest.eventChannel.notify(guestPort)
    _ = await wakeups.next()
    try mapping.unmap()  // views first, then the mapping, then the share
    try shared.unshare()
    return (guest, value)
}
