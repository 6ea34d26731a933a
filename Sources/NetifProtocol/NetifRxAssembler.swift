public import XenCore

/// A frame the backend delivered on the rx ring, validated: which posted buffers hold its bytes, and the
/// buffers of descriptor slots (which hold none and can be posted again at once).
///
/// OCaml: `Assemble.assembled` on the receive side
public struct NetifRxPacket: Sendable, Equatable {
    /// A piece of the frame: `size` bytes at `offset` of the buffer posted under `buffer`.
    public struct Piece: Sendable, Equatable {
        /// The id the buffer was posted with.
        public var buffer: UInt16
        /// Where the bytes start in the page.
        public var offset: Int
        /// How many.
        public var size: Int
    }

    /// The pieces, in order (empty when the backend reported an error).
    public var pieces: [Piece]
    /// Buffers of every slot the packet used, pieces and descriptors alike: all free again afterwards.
    public var buffers: [UInt16]
    /// The descriptors that followed the first response.
    public var extras: [NetifExtraInfo]
    /// The first response's flags.
    public var flags: NetifRxFlags
    /// The frame's length (sum of the pieces).
    public var size: Int
    /// The `NETIF_RSP_*` error the backend reported for one of the slots, if any (the frame is then dropped).
    public var error: Int16?

    /// The GSO descriptor, if any.
    public var gso: (size: UInt16, type: NetifGSOType)? {
        for extra in extras { if case .gso(let size, let type, _) = extra.kind { return (size, type) } }
        return nil
    }
}

/// Turns the rx responses of a ring, copied out one at a time together with the id the frontend posted in
/// that slot, into validated packets: the frontend's parser of what an untrusted backend delivers.
///
/// Netif.h puts each response in the slot of a request the backend consumed; Linux netfront relies on that
/// (descriptors overlay the id). So a data response must echo its slot's id, and any other id is fatal, as are
/// fragments leaving their page, unknown flags, descriptors the frontend did not negotiate, descriptors after
/// the first response, too many slots, and frames above 64 KiB. A negative status is the backend reporting a
/// lost frame: the packet comes back with ``NetifRxPacket/error`` set, to be counted and dropped.
///
/// OCaml: `Assemble.RX_Reader.read_packets`
public struct NetifRxAssembler: Sendable {
    /// What the frontend accepts.
    public struct Limits: Sendable, Equatable {
        /// The most data slots one frame may use (1 without `feature-sg`).
        public var maxSlots: Int
        /// The GSO types the frontend advertised.
        public var gso: Set<NetifGSOType>

        /// Limits.
        public init(maxSlots: Int, gso: Set<NetifGSOType>) {
            self.maxSlots = maxSlots
            self.gso = gso
        }

        /// The limits for `negotiated`: a 64 KiB frame in 4 KiB pieces needs 17 slots, netif.h's minimum is 18.
        public init(_ negotiated: NetifNegotiated) {
            self.init(maxSlots: negotiated.rxScatterGather ? Netif.minimumSlotsPerPacket : 1, gso: negotiated.rxGSO)
        }
    }

    private struct Partial {
        var flags: NetifRxFlags
        var pieces: [NetifRxPacket.Piece] = []
        var buffers: [UInt16] = []
        var extras: [NetifExtraInfo] = []
        var expectingExtra: Bool
        var expectingMore: Bool
        var size = 0
        var error: Int16?
    }

    /// The limits in force.
    public let limits: Limits
    private var partial: Partial?

    /// An assembler with nothing pending.
    public init(limits: Limits) { self.limits = limits }

    /// True while a packet has been started and not finished.
    public var hasPartialPacket: Bool { partial != nil }

    /// Consumes the copy of the response in ring slot `index`, where the frontend had posted buffer `posted`;
    /// returns a packet when this slot completed one.
    ///
    /// OCaml: `Assemble.RX_Reader` one message at a time
    public mutating func consume(_ slot: PageBuffer, index: UInt32, posted: UInt16) throws(NetifProtocolError)
        -> NetifRxPacket?
    {
        if var current = partial, current.expectingExtra {
            let extra = try NetifExtraInfo.decode(from: slot)
            guard current.extras.count < NetifTxAssembler.maxExtras,
                !current.extras.contains(where: { $0.type == extra.type })
            else { throw .unexpectedExtra("repeated or too many descriptors") }
            switch extra.kind {
            case .gso(let size, let type, _):
                guard limits.gso.contains(type) else { throw .unexpectedExtra("GSO type \(type) not requested") }
                guard size > 0 else { throw .unexpectedExtra("GSO size 0") }
            case .multicastAdd, .multicastDelete, .hash:
                throw .unexpectedExtra("type \(extra.type) on the receive ring")
            }
            current.extras.append(extra)
            current.buffers.append(posted)
            current.expectingExtra = extra.more
            partial = current
            return finishIfComplete()
        }
        let response = NetifRxResponse.decode(from: slot)
        guard response.id == posted else { throw .idMismatch(slot: index, expected: posted, got: response.id) }
        guard response.flags.isSubset(of: NetifRxFlags.known), !response.flags.contains(.gsoPrefix) else {
            throw .badResponseFlags(response.flags.rawValue)
        }
        var current =
            partial
            ?? Partial(
                flags: response.flags, expectingExtra: response.flags.contains(.extraInfo),
                expectingMore: response.flags.contains(.moreData))
        if partial != nil {
            guard !response.flags.contains(.extraInfo) else { throw .badResponseFlags(response.flags.rawValue) }
            current.expectingMore = response.flags.contains(.moreData)
        }
        current.buffers.append(posted)
        let dataSlots = current.buffers.count - current.extras.count
        guard dataSlots <= limits.maxSlots else { throw .tooManySlots(dataSlots, limit: limits.maxSlots) }
        if response.status < 0 {
            current.error = current.error ?? response.status
        } else {
            let offset = Int(response.offset)
            let size = Int(response.status)
            guard offset + size <= Netif.pageSize else { throw .fragmentOutsidePage(offset: offset, size: size) }
            current.size += size
            guard current.size <= Netif.maxFrameSize else {
                throw .frameTooLarge(current.size, limit: Netif.maxFrameSize)
            }
            if size > 0 { current.pieces.append(.init(buffer: posted, offset: offset, size: size)) }
        }
        partial = current
        return finishIfComplete()
    }

    private mutating func finishIfComplete() -> NetifRxPacket? {
        guard let current = partial, !current.expectingExtra, !current.expectingMore else { return nil }
        partial = nil
        return NetifRxPacket(
            pieces: current.error == nil ? current.pieces : [], buffers: current.buffers, extras: current.extras,
            flags: current.flags, size: current.error == nil ? current.size : 0, error: current.error)
    }
}
