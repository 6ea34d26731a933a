import XenCore
import XenStoreClient

/// Notices a peer domain's destruction: its kernel cannot clear the live byte or send an event any more,
/// so the survivor watches `@releaseDomain` and asks whether the peer is still there. xenstored allows
/// both only to privileged domains (dom0, a toolstack domain): elsewhere this quietly does nothing.
///
/// OCaml: none (ocaml-vchan #65; `vchan-socket-proxy` watches `@releaseDomain` only while connecting)
enum VchanPeerWatch {
    /// Returns true once `peer` is gone; false when it was never introduced to xenstore (nothing to watch),
    /// when this domain may not ask, on cancellation or when the watch fails.
    static func waitForDeath(of peer: DomainID, xenstore: XenStoreClient) async -> Bool {
        func introduced() async throws(XenStoreError) -> Bool {
            try await xenstore.immediate { handle throws(XenStoreError) in try await handle.isDomainIntroduced(peer) }
        }
        do {
            guard try await introduced() else { return false }
            // The first event arrives at once, so a death between the check and the watch is seen too.
            for try await _ in try await xenstore.watches("@releaseDomain") where !(try await introduced()) {
                return true
            }
        } catch {}
        return false
    }
}
