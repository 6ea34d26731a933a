import Synchronization
public import XenCore

/// The shared `vchan_interface` page as one side sees it: the live bytes, the notification-request bits
/// (changed only with atomic read-modify-writes, as libxenvchan's `__sync_*` calls do), the orders and the
/// grant list. Holds a view of the page: the owner of the share or mapping drops it before releasing.
///
/// OCaml: the `shared_page` accessors of `Vchan.Endpoint` (`get_lo`, `request_notify`, `send_notify`,
/// `state`)
public struct VchanControlPage: Sendable {
    /// The first page of the share or mapping.
    public let page: PageBuffer
    /// The side this code plays.
    public let role: VchanRole

    /// Views `page` (at least one page) as `role`.
    ///
    /// OCaml: `Io_page.to_cstruct (M.buf_of_share ...)` / `(M.buf_of_mapping ...)`
    public init(page: PageBuffer, role: VchanRole) {
        precondition(page.count >= xenPageSize, "the vchan page is a whole page")
        self.page = page.slice(from: 0, count: xenPageSize)
        self.role = role
    }

    /// Fills a fresh server page as `init_gnt_srv` does: everything zero, the orders, `cli_live = 2`
    /// (waiting), `srv_live = 1`, `cli_notify = VCHAN_NOTIFY_WRITE`, and the grant list (left ring's pages,
    /// then the right ring's).
    ///
    /// OCaml: the page set-up in `Vchan.Endpoint.server`
    public static func initialiseServerPage(_ page: PageBuffer, sizes: VchanRingSizes, grants: [GrantRef]) {
        precondition(grants.count == sizes.grantCount, "one grant per external ring page")
        page.slice(from: 0, count: xenPageSize).fill(0)
        page.setUInt16(UInt16(sizes.leftOrder), at: VchanLayout.leftOrderOffset)
        page.setUInt16(UInt16(sizes.rightOrder), at: VchanLayout.rightOrderOffset)
        page.setUInt8(VchanLiveState.waitingForConnection.rawValue, at: VchanLayout.clientLiveOffset)
        page.setUInt8(VchanLiveState.connected.rawValue, at: VchanLayout.serverLiveOffset)
        page.setUInt8(VchanLayout.notifyWrite, at: VchanLayout.clientNotifyOffset)
        for (index, ref) in grants.enumerated() {
            page.setUInt32(ref.rawValue, at: VchanLayout.grantsOffset + 4 * index)
        }
    }

    // MARK: - Orders and grants (read once by a connecting client)

    /// The orders the server wrote, validated. Read these once: the server could change them later.
    ///
    /// OCaml: `Location.of_order (get_lo v)`, `Location.of_order (get_ro v)`
    public func ringSizes() throws(VchanError) -> VchanRingSizes {
        let left = Int(page.uint16(at: VchanLayout.leftOrderOffset))
        let right = Int(page.uint16(at: VchanLayout.rightOrderOffset))
        return try VchanRingSizes(leftOrder: left, rightOrder: right)
    }

    /// The grant list for `sizes`: the left ring's references, then the right ring's.
    ///
    /// OCaml: `unmarshal` in `Vchan.Endpoint.client`
    public func grants(for sizes: VchanRingSizes) -> (left: [GrantRef], right: [GrantRef]) {
        let all = (0..<sizes.grantCount).map { GrantRef(page.uint32(at: VchanLayout.grantsOffset + 4 * $0)) }
        return (Array(all.prefix(sizes.left.pageCount)), Array(all.dropFirst(sizes.left.pageCount)))
    }

    // MARK: - Live bytes

    /// The peer's state, read once. Throws `.invalidLiveState` for a value the protocol does not have (a
    /// server's byte never says "waiting").
    ///
    /// OCaml: `Vchan.Endpoint.state`
    public func peerState() throws(VchanError) -> VchanLiveState {
        let raw = page.uint8(at: role.peerLiveOffset)
        guard let state = VchanLiveState(rawValue: raw), role == .server || state != .waitingForConnection else {
            throw .invalidLiveState(raw)
        }
        return state
    }

    /// Publishes this side's state (`connected` when a client arrives, `exited` on close).
    ///
    /// OCaml: `set_vchan_interface_cli_live` / `srv_live`
    public func setOwnState(_ state: VchanLiveState) {
        atomicMemoryFence(ordering: .sequentiallyConsistent)  // everything written before, then the state
        page.setUInt8(state.rawValue, at: role.ownLiveOffset)
    }

    // MARK: - Notification bits

    /// Overwrites the peer's request byte with `bits` (what a connecting client does with `srv_notify`).
    ///
    /// OCaml: `set_vchan_interface_srv_notify v (bit_of_read_write Write)`
    public func setPeerRequests(_ bits: UInt8) {
        page.setUInt8(bits, at: role.requestOffset)
    }

    /// Asks the peer to send an event the next time it does `bit` (write: produces, read: consumes), then a
    /// full barrier so the caller's re-read of the indices comes after the request is visible.
    ///
    /// OCaml: `Vchan.Endpoint.request_notify`; C: `request_notify`
    public func requestNotify(_ bit: UInt8) {
        _ = atomicByte(at: role.requestOffset).pointee.bitwiseOr(bit, ordering: .sequentiallyConsistent)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// After this side did `bit`: a full barrier (the index update first), then clears the peer's request
    /// for `bit` and answers whether it was set, i.e. whether to send an event.
    ///
    /// OCaml: `Vchan.Endpoint.send_notify`; C: `send_notify`
    public func takeNotifyRequest(_ bit: UInt8) -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let previous = atomicByte(at: role.pendingOffset).pointee.bitwiseAnd(~bit, ordering: .sequentiallyConsistent)
        return previous.oldValue & bit != 0
    }

    /// The requests currently pending from the peer to this side, and from this side to the peer. For tests
    /// and diagnostics.
    ///
    /// OCaml: none (sexp printing of the page)
    public var notifyBytes: (fromPeer: UInt8, toPeer: UInt8) {
        (page.uint8(at: role.pendingOffset), page.uint8(at: role.requestOffset))
    }

    /// The byte at `offset` as an atomic: `Atomic<UInt8>` has exactly a `UInt8`'s layout, so the shared
    /// byte is used in place (the page never moves while this view exists).
    private func atomicByte(at offset: Int) -> UnsafeMutablePointer<Atomic<UInt8>> {
        precondition(offset >= 0 && offset < VchanLayout.headerSize)
        return (page.pointer + offset).assumingMemoryBound(to: Atomic<UInt8>.self)
    }
}
