import NetifProtocol
import SharedRing
import XenCore

/// A netif backend's side of the tx and rx rings shared with a hostile frontend. The frontend writes tx
/// request and extra-info slots, `req_prod` (any value) and the event indices; the backend drains as
/// NetBackQueue does (count, copy each slot once into ``NetifTxAssembler``, answer every slot of a finished
/// packet). On the rx ring the frontend posts buffers and the backend banks them and answers frames into them,
/// which our own frontend's ``NetifRxAssembler`` must then accept. Frames the guest sends also go through the
/// checksum offload (``FrameChecksum``).
///
/// Invariants: the backend never consumes more requests than the frontend published nor holds more than a
/// ring of them; every packet is valid for the limits (fragments inside their pages, sizes adding up, slots
/// and descriptors bounded) and uses exactly the slots consumed for it; every slot of a packet is answered —
/// a refused frame (runt) with `NETIF_RSP_ERROR`, never dropped silently; anything else is a typed error that
/// stops the ring.
///
/// Input: a limits byte, `rsp_prod` of each ring, then actions.
enum NetifBackTarget {
    static let txGeometry = try! SharedRingGeometry(entrySize: Netif.txEntrySize, pages: 1)
    static let rxGeometry = try! SharedRingGeometry(entrySize: Netif.rxEntrySize, pages: 1)

    struct Drain {
        var ring: BackRing
        var assembler: NetifTxAssembler
        /// Slots consumed since the last packet completed.
        var slotsInPacket = 0
    }

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let limits = NetifFuzzPeer.txLimits(input.byte())
        let tx = PageBuffer(pages: 1)
        let rx = PageBuffer(pages: 1)
        tx.setUInt32(UInt32(input.uint16()), at: 8)  // rsp_prod as the frontend left it
        rx.setUInt32(UInt32(input.uint16()), at: 8)
        guard let txRing = try? BackRing(attaching: tx, geometry: txGeometry),
            var rxRing = try? BackRing(attaching: rx, geometry: rxGeometry)
        else { return }
        var drain = Drain(ring: txRing, assembler: NetifTxAssembler(limits: limits))
        var bank: [NetifRxRequest] = []
        while !input.isEmpty {
            switch input.byte() % 10 {
            case 0: HostileRingPeer.writeSlot(&input, tx, txGeometry, bytes: Netif.txEntrySize)
            case 1: NetifFuzzPeer.writeTxSlot(&input, tx)
            case 2: HostileRingPeer.setIndex(&input, tx, at: [0, 4, 12][Int(input.byte() % 3)])
            case 3: HostileRingPeer.advanceIndex(&input, tx, at: 0)
            case 4, 5:
                guard drainTx(&drain, frameLimit: Int(input.byte() % 8)) else { return }
                require(tx.uint32(at: 8) == drain.ring.responseProducer, "tx rsp_prod not published")
            case 6: HostileRingPeer.writeSlot(&input, rx, rxGeometry, bytes: Netif.rxEntrySize)
            case 7: HostileRingPeer.moveIndex(&input, rx, among: [0, 4, 12])
            case 8:
                guard bankRequests(&rxRing, into: &bank) else { return }
                answerFrame(&rxRing, bank: &bank, &input)
            default:
                checksum(input.blob() + input.blob())
            }
            require(
                drain.ring.pendingResponses <= drain.ring.size,
                "\(drain.ring.pendingResponses) tx requests pending on a ring of \(drain.ring.size)")
            require(bank.count == Int(rxRing.pendingResponses), "\(bank.count) rx requests banked, ring says otherwise")
            require(bank.count <= Int(rxGeometry.size), "\(bank.count) rx requests banked on a ring of 256")
        }
    }

    /// NetBackQueue.drainTx: false once the ring is broken (a typed error; NetBack disconnects).
    /// `frameLimit` > 0 plays a reader that is full after that many frames.
    static func drainTx(_ drain: inout Drain, frameLimit: Int) -> Bool {
        var frames = 0
        defer { _ = drain.ring.pushResponses() }
        do {
            drain: while true {
                let consumedBefore = drain.ring.requestConsumer
                let published = drain.ring.memory.uint32(at: 0) &- consumedBefore
                var available = try drain.ring.unconsumedRequests()
                require(available <= published, "\(available) requests claimed, \(published) published")
                while available > 0 {
                    if !drain.assembler.hasPartialPacket, frameLimit > 0, frames >= frameLimit { break drain }
                    available -= 1
                    drain.slotsInPacket += 1
                    guard let packet = try drain.assembler.consume(drain.ring.nextRequestSlot()) else { continue }
                    frames += 1
                    check(packet, limits: drain.assembler.limits, slots: drain.slotsInPacket)
                    drain.slotsInPacket = 0
                    answer(packet, on: &drain.ring)
                }
                require(
                    drain.ring.requestConsumer &- consumedBefore <= published,
                    "consumed \(drain.ring.requestConsumer &- consumedBefore) of \(published) published")
                if try !drain.ring.finalCheckForRequests() { break }
            }
        } catch {
            require(error is SharedRingError || error is NetifProtocolError, "untyped error \(error)")
            return false
        }
        return true
    }

    static func check(_ packet: NetifTxPacket, limits: NetifTxAssembler.Limits, slots: Int) {
        require(
            packet.responseIDs.count == slots, "packet owes \(packet.responseIDs.count) responses for \(slots) slots")
        let dataSlots = packet.responseIDs.filter { $0 != nil }.count
        require(dataSlots == packet.fragments.count, "\(packet.fragments.count) fragments in \(dataSlots) data slots")
        require(dataSlots <= limits.maxSlots, "\(dataSlots) data slots, limit \(limits.maxSlots)")
        require(packet.responseIDs.first! != nil, "a packet that starts with a descriptor")
        require(packet.extras.count == slots - dataSlots, "descriptors and NULL responses disagree")
        require(packet.extras.count <= NetifTxAssembler.maxExtras, "\(packet.extras.count) descriptors")
        require(Set(packet.extras.map(\.type)).count == packet.extras.count, "a descriptor type repeated")
        for extra in packet.extras {
            switch extra.kind {
            case .gso(let size, let type, _): require(size > 0 && limits.gso.contains(type), "GSO \(type) \(size)")
            case .multicastAdd, .multicastDelete: require(limits.multicastControl, "multicast not offered")
            case .hash: require(false, "hash descriptor accepted")
            }
        }
        require(packet.flags.isSubset(of: .known), "unknown flags 0x\(packet.flags.rawValue)")
        require(packet.fragments.map(\.size).reduce(0, +) == packet.size, "fragments do not add up to the frame")
        for fragment in packet.fragments {
            require(
                fragment.offset >= 0 && fragment.size >= 0 && fragment.offset + fragment.size <= Netif.pageSize,
                "fragment \(fragment.offset)+\(fragment.size) leaves its page")
        }
        require(
            packet.fragments.map(\.id) == packet.responseIDs.compactMap { $0 },
            "response ids are not the fragments' ids")
    }

    /// Answers every slot of `packet` as NetBackQueue does: NULL for descriptors; a frame the backend refuses
    /// (shorter than an Ethernet header) gets ERROR — reported, not dropped.
    static func answer(_ packet: NetifTxPacket, on ring: inout BackRing) {
        let status: NetifStatus =
            packet.isMulticastControl || packet.size >= Netif.ethernetHeaderSize ? .okay : .error
        for id in packet.responseIDs {
            guard let slot = ring.nextResponseSlot() else {
                return require(false, "no response slot for a consumed request")
            }
            let response = NetifTxResponse(id: id ?? 0, status: id == nil ? .null : status)
            response.encode(into: slot)
            require((try? NetifTxResponse.decode(from: slot)) == response, "tx response does not survive its slot")
        }
    }

    /// NetBackQueue.bank: false once the rx ring is broken.
    static func bankRequests(_ ring: inout BackRing, into bank: inout [NetifRxRequest]) -> Bool {
        do {
            while true {
                let published = ring.memory.uint32(at: 0) &- ring.requestConsumer
                var available = try ring.unconsumedRequests()
                require(available <= published, "\(available) rx requests claimed, \(published) published")
                while available > 0 {
                    available -= 1
                    bank.append(NetifRxRequest.decode(from: ring.nextRequestSlot()))
                }
                if try !ring.finalCheckForRequests() { return true }
            }
        } catch {
            return false
        }
    }

    /// NetBackQueue.transmit for a frame of the length the input chooses (with a GSO descriptor or not), once
    /// enough requests are banked; our frontend's assembler must accept what the backend answered.
    static func answerFrame(_ ring: inout BackRing, bank: inout [NetifRxRequest], _ input: inout FuzzInput) {
        let size = Int(input.uint16())
        let extra: NetifExtraInfo? = input.bool() ? NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)) : nil
        let pages = Netif.slots(forFrameOf: size)
        let slots = pages + (extra == nil ? 0 : 1)
        guard bank.count >= slots else { return }
        let requests = Array(bank.prefix(slots))
        bank.removeFirst(slots)
        let data = extra == nil ? requests : [requests[0]] + requests.dropFirst(2)
        var written: [(slot: PageBuffer, posted: UInt16)] = []
        for (index, request) in data.enumerated() {
            let length = min(xenPageSize, size - index * xenPageSize)
            var flags: NetifRxFlags = []
            if index < data.count - 1 { flags.insert(.moreData) }
            if index == 0, extra != nil { flags.insert(.extraInfo) }
            guard let slot = ring.nextResponseSlot() else { return require(false, "no rx response slot") }
            NetifRxResponse(id: request.id, offset: 0, flags: flags, status: Int16(length)).encode(into: slot)
            written.append((slot, request.id))
            if index == 0, let extra {
                guard let extraSlot = ring.nextResponseSlot() else { return require(false, "no rx descriptor slot") }
                extra.encode(into: extraSlot)
                written.append((extraSlot, requests[1].id))
            }
        }
        _ = ring.pushResponses()
        // The frontend copies each slot before the backend could scribble on it again.
        var assembler = NetifRxAssembler(limits: .init(maxSlots: Netif.minimumSlotsPerPacket, gso: [.tcpv4]))
        var packet: NetifRxPacket?
        for (index, entry) in written.enumerated() {
            let copy = PageBuffer(copying: entry.slot.bytes)
            do {
                packet = try assembler.consume(copy, index: UInt32(index), posted: entry.posted)
            } catch {
                return require(false, "our frontend refused what our backend answered: \(error)")
            }
            require(
                (packet != nil) == (index == written.count - 1), "packet ended at slot \(index) of \(written.count)")
        }
        require(
            packet?.size == size && packet?.error == nil,
            "frame of \(size) bytes came back as \(String(describing: packet))")
    }

    /// The software checksum offload NetBack applies to a blank-checksum frame: completing one must make it
    /// verify, and the parsed headers must lie inside the frame.
    static func checksum(_ bytes: [UInt8]) {
        let frame = PageBuffer(copying: bytes.isEmpty ? [0] : bytes)
        if let layout = FrameLayout(frame) {
            require(
                layout.checksumOffset + 2 <= frame.count && layout.headerLength <= frame.count
                    && layout.transportOffset + layout.transportLength <= frame.count,
                "headers \(layout) outside a frame of \(frame.count) bytes")
        }
        guard FrameChecksum.complete(frame) else {
            return require(FrameLayout(frame) == nil, "complete refused a frame it can parse")
        }
        require(FrameChecksum.verify(frame) == true, "a completed checksum does not verify")
    }
}

/// What a hostile netif peer does beyond a ring.h peer (``HostileRingPeer``): well-formed slots more often
/// than chance would write them.
enum NetifFuzzPeer {
    /// The backend's limits: bit 0 scatter-gather, bits 1-2 GSO types, bit 3 multicast control.
    static func txLimits(_ byte: UInt8) -> NetifTxAssembler.Limits {
        var gso: Set<NetifGSOType> = []
        if byte & 2 != 0 { gso.insert(.tcpv4) }
        if byte & 4 != 0 { gso.insert(.tcpv6) }
        return .init(
            maxSlots: byte & 1 != 0 ? Netif.minimumSlotsPerPacket : 1, gso: gso, multicastControl: byte & 8 != 0)
    }

    /// A tx request or extra-info descriptor, from structured input, in a slot the input chooses.
    static func writeTxSlot(_ input: inout FuzzInput, _ memory: PageBuffer) {
        let slot = memory.slice(
            from: SharedRingGeometry.headerSize + Int(input.byte()) % Int(NetifBackTarget.txGeometry.size)
                * Netif.txEntrySize,
            count: Netif.txEntrySize)
        let kind = input.byte()
        if kind & 1 == 0 {
            NetifTxRequest(
                grant: GrantRef(UInt32(input.byte())), offset: input.uint16() % 4200,
                flags: NetifTxFlags(rawValue: UInt16(kind >> 1) & 0x1F), id: input.uint16(), size: input.uint16()
            ).encode(into: slot)
        } else {
            let more = kind & 2 != 0
            let extra: NetifExtraInfo
            switch (kind >> 2) % 4 {
            case 0:
                extra = NetifExtraInfo(
                    .gso(size: input.uint16(), type: input.bool() ? .tcpv4 : .tcpv6, features: 0), more: more)
            case 1: extra = NetifExtraInfo(.multicastAdd(Netif.defaultBackendMAC), more: more)
            case 2: extra = NetifExtraInfo(.multicastDelete(Netif.defaultBackendMAC), more: more)
            default: extra = NetifExtraInfo(.hash(hashType: 1, algorithm: 1, value: input.uint32()), more: more)
            }
            extra.encode(into: slot)
        }
    }
}
