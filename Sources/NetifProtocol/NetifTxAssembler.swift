public import XenCore

/// One fragment of a transmitted frame: `size` bytes at `offset` of the page the frontend granted.
///
/// OCaml: `Assemble.fragment`
public struct NetifFragment: Sendable, Equatable {
    /// The granted page.
    public var grant: GrantRef
    /// Where the fragment starts in the page.
    public var offset: Int
    /// Its length (already checked to stay inside the page).
    public var size: Int
    /// The request id to answer.
    public var id: UInt16

    /// A fragment.
    public init(grant: GrantRef, offset: Int, size: Int, id: UInt16) {
        self.grant = grant
        self.offset = offset
        self.size = size
        self.id = id
    }
}

/// A frame the frontend put on the tx ring, validated: its fragments, descriptors, flags and, in slot order,
/// the responses it is owed (one per request, `NULL` for each descriptor slot).
///
/// OCaml: `Assemble.assembled` (`total_size`, `fragments`, `extra_ids`)
public struct NetifTxPacket: Sendable, Equatable {
    /// The fragments, in order.
    public var fragments: [NetifFragment]
    /// The descriptors that followed the first request.
    public var extras: [NetifExtraInfo]
    /// The first request's flags.
    public var flags: NetifTxFlags
    /// The frame's length.
    public var size: Int
    /// For each slot the packet used, in order: the request id to answer, or nil for a descriptor slot.
    public var responseIDs: [UInt16?]

    /// The GSO descriptor, if any.
    public var gso: (size: UInt16, type: NetifGSOType)? {
        for extra in extras { if case .gso(let size, let type, _) = extra.kind { return (size, type) } }
        return nil
    }

    /// True when the packet carries a multicast filter change (a control request, not a frame to deliver).
    public var isMulticastControl: Bool {
        extras.contains { extra in
            switch extra.kind {
            case .multicastAdd, .multicastDelete: true
            default: false
            }
        }
    }
}

/// Turns the slots of a tx ring, copied out one at a time, into validated packets: the backend's parser of
/// what an untrusted frontend transmits. It keeps a packet's partial state across calls, so a frontend that
/// publishes a packet in two pushes is served, and it throws on anything Linux's netback treats as fatal:
/// a fragment leaving its page, fragment sizes larger than the announced frame, more slots than allowed,
/// unknown flags, descriptors of unknown or unnegotiated types, or more than four of them.
///
/// OCaml: `Assemble.TX_Reader.read_packets` (which drops such packets with a warning)
public struct NetifTxAssembler: Sendable {
    /// What the backend accepts.
    public struct Limits: Sendable, Equatable {
        /// The most data slots one frame may use (1 without `feature-sg`).
        public var maxSlots: Int
        /// The GSO types advertised.
        public var gso: Set<NetifGSOType>
        /// Whether multicast control descriptors are accepted (`feature-multicast-control` advertised).
        public var multicastControl: Bool

        /// Limits.
        public init(maxSlots: Int, gso: Set<NetifGSOType>, multicastControl: Bool) {
            self.maxSlots = maxSlots
            self.gso = gso
            self.multicastControl = multicastControl
        }

        /// The limits a backend applies for `negotiated` (with Linux's 18-slot minimum when SG is on).
        public init(_ negotiated: NetifNegotiated, multicastOffered: Bool) {
            self.init(
                maxSlots: negotiated.txScatterGather ? Netif.minimumSlotsPerPacket : 1, gso: negotiated.txGSO,
                multicastControl: multicastOffered)
        }
    }

    /// The most descriptors one packet may carry (one per type netif.h defines).
    public static let maxExtras = 4

    private struct Partial {
        var first: NetifTxRequest
        var extras: [NetifExtraInfo] = []
        var expectingExtra: Bool
        var fragments: [NetifTxRequest] = []
        var expectingFragment: Bool
        var responseIDs: [UInt16?]
    }

    /// The limits in force.
    public let limits: Limits
    private var partial: Partial?

    /// An assembler with nothing pending.
    public init(limits: Limits) { self.limits = limits }

    /// True while a packet has been started and not finished.
    public var hasPartialPacket: Bool { partial != nil }

    /// Consumes the copy of one tx slot; returns a packet when this slot completed one.
    ///
    /// OCaml: `Assemble.TX_Reader.collect_messages` + `group_into_packets`, one slot at a time
    public mutating func consume(_ slot: PageBuffer) throws(NetifProtocolError) -> NetifTxPacket? {
        guard var current = partial else {
            let request = NetifTxRequest.decode(from: slot)
            try Self.checkFlags(request.flags)
            let started = Partial(
                first: request, expectingExtra: request.flags.contains(.extraInfo),
                expectingFragment: request.flags.contains(.moreData), responseIDs: [request.id])
            partial = started
            return try finishIfComplete()
        }
        if current.expectingExtra {
            let extra = try NetifExtraInfo.decode(from: slot)
            try check(extra, after: current.extras)
            current.extras.append(extra)
            current.expectingExtra = extra.more
            current.responseIDs.append(nil)
        } else {
            let request = NetifTxRequest.decode(from: slot)
            try Self.checkFlags(request.flags)
            // A continuation carries no descriptors (netif.h: flags on extras are not relevant, and Linux
            // refuses extra_info on anything but the first request).
            guard !request.flags.contains(.extraInfo) else { throw .unexpectedExtra("on a continuation request") }
            current.fragments.append(request)
            current.expectingFragment = request.flags.contains(.moreData)
            current.responseIDs.append(request.id)
            guard current.fragments.count + 1 <= limits.maxSlots else {
                throw .tooManySlots(current.fragments.count + 1, limit: limits.maxSlots)
            }
        }
        partial = current
        return try finishIfComplete()
    }

    private static func checkFlags(_ flags: NetifTxFlags) throws(NetifProtocolError) {
        guard flags.isSubset(of: .known) else { throw .unknownFlags(flags.rawValue) }
    }

    private func check(_ extra: NetifExtraInfo, after earlier: [NetifExtraInfo]) throws(NetifProtocolError) {
        guard earlier.count < Self.maxExtras else { throw .unexpectedExtra("more than \(Self.maxExtras)") }
        guard !earlier.contains(where: { $0.type == extra.type }) else {
            throw .unexpectedExtra("second descriptor of type \(extra.type)")
        }
        switch extra.kind {
        case .gso(let size, let type, _):
            guard limits.gso.contains(type) else { throw .unexpectedExtra("GSO type \(type) not advertised") }
            guard size > 0 else { throw .unexpectedExtra("GSO size 0") }
        case .multicastAdd, .multicastDelete:
            guard limits.multicastControl else { throw .unexpectedExtra("multicast control not advertised") }
        case .hash:
            throw .unexpectedExtra("hash descriptors not negotiated")
        }
    }

    /// Validates sizes and offsets once the chain has ended.
    private mutating func finishIfComplete() throws(NetifProtocolError) -> NetifTxPacket? {
        guard let current = partial, !current.expectingExtra, !current.expectingFragment else { return nil }
        partial = nil
        let announced = Int(current.first.size)
        var rest = 0
        var fragments: [NetifFragment] = []
        fragments.reserveCapacity(current.fragments.count + 1)
        for request in current.fragments {
            let offset = Int(request.offset)
            let size = Int(request.size)
            guard offset + size <= Netif.pageSize else { throw .fragmentOutsidePage(offset: offset, size: size) }
            rest += size
            fragments.append(NetifFragment(grant: request.grant, offset: offset, size: size, id: request.id))
        }
        guard rest <= announced else { throw .inconsistentSizes(announced: announced, fragments: rest) }
        let firstSize = announced - rest
        let firstOffset = Int(current.first.offset)
        guard firstOffset + firstSize <= Netif.pageSize else {
            throw .fragmentOutsidePage(offset: firstOffset, size: firstSize)
        }
        fragments.insert(
            NetifFragment(grant: current.first.grant, offset: firstOffset, size: firstSize, id: current.first.id), at: 0
        )
        return NetifTxPacket(
            fragments: fragments, extras: current.extras, flags: current.first.flags, size: announced,
            responseIDs: current.responseIDs)
    }
}
