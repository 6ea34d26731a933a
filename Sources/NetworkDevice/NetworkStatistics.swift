import Synchronization

/// A device's counters: mirage-net-xen's `Stats` (bytes and packets each way) plus what makes drops and
/// back-pressure visible. "rx" is what the device received from its peer, "tx" what it sent.
///
/// OCaml: `Mirage_net.stats` (`rx_bytes`, `rx_pkts`, `tx_bytes`, `tx_pkts`)
public struct NetworkStatistics: Sendable, Equatable, CustomStringConvertible {
    /// Bytes of frames received and delivered.
    public var rxBytes: UInt64 = 0
    /// Frames received and delivered.
    public var rxPackets: UInt64 = 0
    /// Bytes of frames sent.
    public var txBytes: UInt64 = 0
    /// Frames sent.
    public var txPackets: UInt64 = 0
    /// Received frames dropped on purpose (multicast filter, runts), each counted.
    public var rxDropped: UInt64 = 0
    /// Received frames lost to an error (the peer reported one, a copy failed).
    public var rxErrors: UInt64 = 0
    /// Frames not sent on purpose (filtered, no connection), each counted.
    public var txDropped: UInt64 = 0
    /// Frames the peer reported as dropped or failed (`NETIF_RSP_DROPPED`/`ERROR`), or that could not be
    /// copied to it.
    public var txErrors: UInt64 = 0
    /// Times a writer waited for ring space or receive buffers (back-pressure).
    public var txWaits: UInt64 = 0
    /// Times the device held frames back on the ring because nobody was reading (back-pressure).
    public var rxHeldBack: UInt64 = 0
    /// Ring entries in use now on the transmit side (requests awaiting responses, or banked rx requests).
    public var txRingUse: Int = 0
    /// Ring entries in use now on the receive side (buffers posted, or requests pending).
    public var rxRingUse: Int = 0

    /// All zero.
    ///
    /// OCaml: `Stats.create`
    public init() {}

    public var description: String {
        "rx \(rxPackets) frames/\(rxBytes) B (dropped \(rxDropped), errors \(rxErrors), held back \(rxHeldBack)), "
            + "tx \(txPackets) frames/\(txBytes) B (dropped \(txDropped), errors \(txErrors), waits \(txWaits)), "
            + "ring use tx \(txRingUse) rx \(rxRingUse)"
    }
}

/// The counters of one device, updated from many tasks.
///
/// OCaml: the mutable `Mirage_net.stats` record (`Stats.rx`, `Stats.tx`, `Stats.reset`)
public final class NetworkCounters: Sendable {
    private let state = Mutex(NetworkStatistics())

    /// All zero.
    ///
    /// OCaml: `Stats.create`
    public init() {}

    /// A frame of `bytes` received.
    ///
    /// OCaml: `Stats.rx`
    public func received(_ bytes: Int) {
        state.withLock {
            $0.rxPackets &+= 1
            $0.rxBytes &+= UInt64(bytes)
        }
    }

    /// A frame of `bytes` sent.
    ///
    /// OCaml: `Stats.tx`
    public func sent(_ bytes: Int) {
        state.withLock {
            $0.txPackets &+= 1
            $0.txBytes &+= UInt64(bytes)
        }
    }

    /// Adds to any other counter.
    ///
    /// OCaml: none (Stats has only rx/tx)
    public func count(_ counter: WritableKeyPath<NetworkStatistics, UInt64>, by amount: UInt64 = 1) {
        state.withLock { $0[keyPath: counter] &+= amount }
    }

    /// A snapshot, with the ring gauges supplied by the device.
    ///
    /// OCaml: `Mirage_net.S.get_stats_counters`
    public func snapshot(txRingUse: Int = 0, rxRingUse: Int = 0) -> NetworkStatistics {
        var copy = state.withLock { $0 }
        copy.txRingUse = txRingUse
        copy.rxRingUse = rxRingUse
        return copy
    }

    /// Zeroes every counter.
    ///
    /// OCaml: `Stats.reset`
    public func reset() { state.withLock { $0 = NetworkStatistics() } }
}
