public import GrantTable
public import XenCore

extension SimulatedGrantTable {
    /// Maps one grant and arms `notify` for the unmap, as gntdev does: when the mapping goes (unmapped, or
    /// its last view dropped) the byte in the mapped page is cleared and the event sent from this domain.
    ///
    /// OCaml: none; C: `xengnttab_map_grant_ref_notify`
    public func map(
        domain granter: DomainID, ref: GrantRef, writable: Bool, notify: UnmapNotification
    ) throws(GrantTableError) -> GrantMapping {
        try notify.validate()
        let hypervisor = self.hypervisor
        let mapper = domain
        return try mapPages(granter: granter, refs: [ref], writable: writable) { address in
            hypervisor.fireUnmapNotification(notify, at: address, from: mapper)
        }
    }
}

extension SimulatedGntshr {
    /// Shares one page and arms `notify` for the unshare, as gntalloc does (also when the other side still
    /// maps it, and when the share's last view is dropped without an unshare).
    ///
    /// OCaml: none; C: `xengntshr_share_page_notify`
    public func sharePage(
        with grantee: DomainID, writable: Bool, notify: UnmapNotification
    ) throws(GrantTableError) -> SharedPages {
        try notify.validate()
        let hypervisor = self.hypervisor
        let granter = domain
        return try sharePages(with: grantee, count: 1, writable: writable) { address in
            hypervisor.fireUnmapNotification(notify, at: address, from: granter)
        }
    }
}

extension UnmapNotification {
    /// Throws `.invalidNotifyOffset` for a byte outside the page (as the kernel's `EINVAL`).
    fileprivate func validate() throws(GrantTableError) {
        if let byteOffset, !(0..<xenPageSize).contains(byteOffset) { throw .invalidNotifyOffset(byteOffset) }
    }
}

extension SimulatedHypervisor {
    /// Runs an armed unmap notification as the kernel would: clears the byte of the page at `address` (still
    /// mapped), then signals the port of `domain` (skipped when that domain is gone: a dead domain's kernel
    /// sends nothing).
    func fireUnmapNotification(
        _ notify: UnmapNotification, at address: UnsafeMutableRawPointer, from domain: DomainID
    ) {
        if let offset = notify.byteOffset { address.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self) }
        if let port = notify.port, let owner = self.domain(domain) { try? owner.eventChannel.notify(port) }
    }
}
