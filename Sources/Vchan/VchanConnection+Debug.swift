import Synchronization

extension VchanConnection: CustomDebugStringConvertible {
    /// The shared page as this side sees it now (both rings' indices, the live bytes, the notification
    /// requests both ways) and this side's counters: what a check prints when a transfer stalls.
    ///
    /// OCaml: `Vchan.Endpoint.sexp_of_t` (`to_debug_string`)
    public var debugDescription: String {
        let read = inbound.withLock { half -> String in
            guard let ring = half.ring else { return "read ring released" }
            return "read cons \(ring.consumer) prod \(ring.control.page.uint32(at: role.readIndices.producer))"
        }
        let write = outbound.withLock { half -> String in
            guard let ring = half.ring else { return "write ring released" }
            let control = ring.control
            let (fromPeer, toPeer) = control.notifyBytes
            return "write prod \(ring.producer) cons \(control.page.uint32(at: role.writeIndices.consumer)); "
                + "peer live \(control.page.uint8(at: role.peerLiveOffset)); "
                + "requests to us \(fromPeer), to the peer \(toPeer)"
        }
        let (received, sent) = statistics
        return "\(role) port \(localPort) \(ringSizes): \(read); \(write); \(received) bytes in, \(sent) out, "
            + "\(eventsReceived.load(ordering: .relaxed)) events (\(eventStatistics.resent) resent, "
            + "\(eventStatistics.rescued) rescued by the timer), failure \(failure.map { "\($0)" } ?? "none")"
    }
}
