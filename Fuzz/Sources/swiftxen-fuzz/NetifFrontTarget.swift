import NetifProtocol
import SharedRing
import XenCore

/// A netif frontend's side of the tx and rx rings shared with a hostile backend, as NetFrontQueue drives
/// them: we transmit frames (a request per fragment, perhaps a GSO descriptor) and post rx buffers; the
/// backend writes response slots, `rsp_prod` (any value) and the event indices. Tx responses must name an id
/// in flight (else a typed error); rx responses go through ``NetifRxAssembler`` with the id we posted in each
/// slot.
///
/// Invariants: never more responses consumed than requests outstanding; an id is freed at most once; every
/// rx packet uses exactly the slots consumed for it, its pieces lie inside their pages in buffers it owns and
/// add up to its size, an error packet delivers nothing; every buffer is either posted or free, never both or
/// twice.
///
/// Input: a limits byte, then actions.
enum NetifFrontTarget {
    static let ids = 256

    struct Rx {
        var ring: FrontRing
        var assembler: NetifRxAssembler
        var free: [UInt16] = (0..<UInt16(NetifFrontTarget.ids)).reversed()
        var postedBySlot: [UInt16]
        var slotsInPacket = 0
    }

    struct Tx {
        var ring: FrontRing
        var free: [UInt16] = (0..<UInt16(NetifFrontTarget.ids)).reversed()
        var inFlight = [Bool](repeating: false, count: NetifFrontTarget.ids)
    }

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let limitsByte = input.byte()
        var gso: Set<NetifGSOType> = []
        if limitsByte & 2 != 0 { gso.insert(.tcpv4) }
        if limitsByte & 4 != 0 { gso.insert(.tcpv6) }
        let limits = NetifRxAssembler.Limits(maxSlots: limitsByte & 1 != 0 ? Netif.minimumSlotsPerPacket : 1, gso: gso)
        let txMemory = PageBuffer(pages: 1)
        let rxMemory = PageBuffer(pages: 1)
        guard let txRing = try? FrontRing(initialising: txMemory, geometry: NetifBackTarget.txGeometry),
            let rxRing = try? FrontRing(initialising: rxMemory, geometry: NetifBackTarget.rxGeometry)
        else { return }
        var tx = Tx(ring: txRing)
        var rx = Rx(
            ring: rxRing, assembler: NetifRxAssembler(limits: limits),
            postedBySlot: [UInt16](repeating: 0, count: Int(rxRing.size)))
        while !input.isEmpty {
            switch input.byte() % 9 {
            case 0: transmit(&tx, fragments: 1 + Int(input.byte() % 4), extra: input.bool())
            case 1: HostileRingPeer.writeSlot(&input, txMemory, NetifBackTarget.txGeometry, bytes: Netif.txResponseSize)
            case 2: HostileRingPeer.moveIndex(&input, txMemory, among: [4, 8, 12])
            case 3: guard drainTx(&tx) else { return }
            case 4: post(&rx)
            case 5: HostileRingPeer.writeSlot(&input, rxMemory, NetifBackTarget.rxGeometry, bytes: Netif.rxResponseSize)
            case 6: writeRxResponse(&input, rxMemory, &rx)
            case 7: HostileRingPeer.moveIndex(&input, rxMemory, among: [4, 8, 12])
            default: guard drainRx(&rx) else { return }
            }
            require(tx.ring.outstanding <= tx.ring.size, "\(tx.ring.outstanding) tx requests outstanding")
            require(rx.ring.outstanding <= rx.ring.size, "\(rx.ring.outstanding) rx buffers outstanding")
            require(tx.free.count + tx.inFlight.filter { $0 }.count == ids, "tx ids lost or duplicated")
            require(Set(rx.free).count == rx.free.count, "an rx buffer freed twice")
            require(rx.free.count + Int(rx.ring.outstanding) + rx.slotsInPacket == ids, "rx buffers lost or duplicated")
        }
    }

    /// NetFrontQueue.submit: a frame of `fragments` requests (and a descriptor), when ids and slots allow.
    static func transmit(_ tx: inout Tx, fragments: Int, extra: Bool) {
        let slots = fragments + (extra ? 1 : 0)
        guard tx.free.count >= fragments, tx.ring.freeRequests >= slots else { return }
        for position in 0..<fragments {
            let id = tx.free.removeLast()
            tx.inFlight[Int(id)] = true
            var flags: NetifTxFlags = position < fragments - 1 ? [.moreData] : []
            if position == 0, extra { flags.insert(.extraInfo) }
            guard let slot = tx.ring.nextRequestSlot() else { return require(false, "no tx slot though free") }
            NetifTxRequest(grant: GrantRef(UInt32(id)), offset: 0, flags: flags, id: id, size: 100).encode(into: slot)
            if position == 0, extra {
                guard let extraSlot = tx.ring.nextRequestSlot() else { return require(false, "no descriptor slot") }
                NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)).encode(into: extraSlot)
            }
        }
        _ = tx.ring.pushRequests()
    }

    /// NetFrontQueue.drainTx: false once the backend broke the ring or the protocol (an unknown status, an id
    /// not in flight: NetFront stops there and disconnects).
    static func drainTx(_ tx: inout Tx) -> Bool {
        let outstanding = tx.ring.outstanding
        var violation: NetifProtocolError?
        var inFlight = tx.inFlight
        var freed: [UInt16] = []
        let consumed: Int
        do {
            consumed = try tx.ring.consumeResponses { slot in
                guard violation == nil else { return }
                do throws(NetifProtocolError) {
                    let response = try NetifTxResponse.decode(from: slot)
                    guard response.status != .null else { return }
                    guard Int(response.id) < inFlight.count, inFlight[Int(response.id)] else {
                        throw .unknownID(response.id)
                    }
                    inFlight[Int(response.id)] = false
                    freed.append(response.id)
                } catch {
                    violation = error
                }
            }
        } catch {
            return false
        }
        require(consumed <= Int(outstanding), "\(consumed) tx responses, \(outstanding) requests outstanding")
        tx.inFlight = inFlight
        tx.free += freed
        return violation == nil
    }

    /// NetFrontQueue posts every free buffer, remembering which slot holds which.
    static func post(_ rx: inout Rx) {
        while rx.ring.freeRequests > 0, let buffer = rx.free.popLast() {
            let index = rx.ring.requestProducer
            guard let slot = rx.ring.nextRequestSlot() else { return require(false, "no rx slot though free") }
            rx.postedBySlot[Int(index & (rx.ring.size - 1))] = buffer
            NetifRxRequest(id: buffer, grant: GrantRef(UInt32(buffer))).encode(into: slot)
        }
        _ = rx.ring.pushRequests()
    }

    /// The backend answers a slot: mostly with the id we posted there, flags, offset and status of its choice.
    static func writeRxResponse(_ input: inout FuzzInput, _ memory: PageBuffer, _ rx: inout Rx) {
        let index = rx.ring.responseConsumer &+ UInt32(input.byte() % 8)
        let slot = memory.slice(
            from: SharedRingGeometry.headerSize + Int(index & (rx.ring.size - 1)) * Netif.rxEntrySize,
            count: Netif.rxEntrySize)
        let posted = rx.postedBySlot[Int(index & (rx.ring.size - 1))]
        let flags = NetifRxFlags(rawValue: UInt16(input.byte() & 0x1F))
        NetifRxResponse(
            id: input.byte() == 0 ? UInt16(input.byte()) : posted, offset: input.uint16() % 4200, flags: flags,
            status: Int16(bitPattern: input.uint16() % 4200 &- 2)
        ).encode(into: slot)
    }

    /// NetFrontQueue.drainRx: false once the backend broke the ring or the protocol.
    static func drainRx(_ rx: inout Rx) -> Bool {
        do {
            while true {
                let outstanding = rx.ring.outstanding
                var available = try rx.ring.unconsumedResponses()
                require(available <= outstanding, "\(available) rx responses, \(outstanding) buffers posted")
                while available > 0 {
                    available -= 1
                    let index = rx.ring.responseConsumer
                    let posted = rx.postedBySlot[Int(index & (rx.ring.size - 1))]
                    rx.slotsInPacket += 1
                    let copy = PageBuffer(copying: rx.ring.nextResponseSlot().bytes)
                    guard let packet = try rx.assembler.consume(copy, index: index, posted: posted) else { continue }
                    check(packet, limits: rx.assembler.limits, slots: rx.slotsInPacket)
                    rx.slotsInPacket = 0
                    rx.free.append(contentsOf: packet.buffers)
                }
                if try !rx.ring.finalCheckForResponses() { break }
            }
        } catch {
            require(error is SharedRingError || error is NetifProtocolError, "untyped error \(error)")
            return false
        }
        post(&rx)
        return true
    }

    static func check(_ packet: NetifRxPacket, limits: NetifRxAssembler.Limits, slots: Int) {
        require(packet.buffers.count == slots, "packet frees \(packet.buffers.count) buffers for \(slots) slots")
        require(Set(packet.buffers).count == slots, "a buffer twice in one packet")
        require(packet.buffers.count - packet.extras.count <= limits.maxSlots, "too many data slots")
        require(packet.pieces.map(\.size).reduce(0, +) == packet.size, "pieces do not add up to the frame")
        require(packet.size <= Netif.maxFrameSize, "frame of \(packet.size) bytes")
        if packet.error != nil { require(packet.pieces.isEmpty && packet.size == 0, "an error packet with data") }
        for piece in packet.pieces {
            require(packet.buffers.contains(piece.buffer), "piece in buffer \(piece.buffer) of another packet")
            require(
                piece.offset >= 0 && piece.size > 0 && piece.offset + piece.size <= Netif.pageSize,
                "piece \(piece.offset)+\(piece.size) leaves its page")
        }
        for extra in packet.extras {
            guard case .gso(let size, let type, _) = extra.kind else { return require(false, "\(extra) on rx") }
            require(size > 0 && limits.gso.contains(type), "GSO \(type) \(size) not negotiated")
        }
    }
}
