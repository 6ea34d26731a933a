import NetifProtocol
import Testing
import XenCore

/// The tx and rx parsers on hand-built slot sequences: good packets, and one test per thing a hostile peer
/// can write.
@Suite struct NetifAssemblerTests {
    static let limits = NetifTxAssembler.Limits(maxSlots: 18, gso: [.tcpv4], multicastControl: true)

    static func txSlot(_ request: NetifTxRequest) -> PageBuffer {
        let slot = PageBuffer(pages: 1).slice(from: 0, count: Netif.txEntrySize)
        request.encode(into: slot)
        return slot
    }

    static func txSlot(_ extra: NetifExtraInfo) -> PageBuffer {
        let slot = PageBuffer(pages: 1).slice(from: 0, count: Netif.txEntrySize)
        extra.encode(into: slot)
        return slot
    }

    @Test func singleSlotFrame() throws {
        var assembler = NetifTxAssembler(limits: Self.limits)
        let packet = try #require(
            try assembler.consume(Self.txSlot(NetifTxRequest(grant: 9, offset: 100, flags: [], id: 4, size: 1514))))
        #expect(packet.size == 1514 && packet.fragments == [NetifFragment(grant: 9, offset: 100, size: 1514, id: 4)])
        #expect(packet.responseIDs == [4] && packet.extras.isEmpty && !assembler.hasPartialPacket)
    }

    @Test func scatterGatherFrameWithGSOAcrossTwoPushes() throws {
        var assembler = NetifTxAssembler(limits: Self.limits)
        let total = 4096 * 2 + 1000
        #expect(
            try assembler.consume(
                Self.txSlot(
                    NetifTxRequest(
                        grant: 1, offset: 0, flags: [.moreData, .extraInfo, .checksumBlank], id: 0, size: UInt16(total))
                ))
                == nil)
        #expect(try assembler.consume(Self.txSlot(NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0)))) == nil)
        #expect(assembler.hasPartialPacket)
        #expect(
            try assembler.consume(Self.txSlot(NetifTxRequest(grant: 2, offset: 0, flags: .moreData, id: 1, size: 4096)))
                == nil)
        let packet = try #require(
            try assembler.consume(Self.txSlot(NetifTxRequest(grant: 3, offset: 0, flags: [], id: 2, size: 1000))))
        #expect(packet.size == total)
        #expect(packet.fragments.map(\.size) == [4096, 4096, 1000])
        #expect(packet.responseIDs == [0, nil, 1, 2])
        #expect(packet.gso?.size == 1448 && packet.gso?.type == .tcpv4)
        #expect(packet.flags.contains(.checksumBlank))
    }

    @Test func multicastControlPacket() throws {
        var assembler = NetifTxAssembler(limits: Self.limits)
        _ = try assembler.consume(Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .extraInfo, id: 7, size: 0)))
        let mac = try #require(MACAddress("01:00:5e:00:00:01"))
        let packet = try #require(try assembler.consume(Self.txSlot(NetifExtraInfo(.multicastAdd(mac)))))
        #expect(packet.isMulticastControl && packet.responseIDs == [7, nil])
    }

    @Test func fragmentLeavingItsPageIsFatal() {
        var assembler = NetifTxAssembler(limits: Self.limits)
        #expect(throws: NetifProtocolError.fragmentOutsidePage(offset: 4000, size: 200)) {
            try assembler.consume(Self.txSlot(NetifTxRequest(grant: 1, offset: 4000, flags: [], id: 0, size: 200)))
        }
        var second = NetifTxAssembler(limits: Self.limits)
        #expect(throws: NetifProtocolError.fragmentOutsidePage(offset: 100, size: 4096)) {
            _ = try second.consume(
                Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .moreData, id: 0, size: 5000)))
            _ = try second.consume(Self.txSlot(NetifTxRequest(grant: 2, offset: 100, flags: [], id: 1, size: 4096)))
        }
    }

    @Test func fragmentsLargerThanTheFrameAreFatal() {
        var assembler = NetifTxAssembler(limits: Self.limits)
        #expect(throws: NetifProtocolError.inconsistentSizes(announced: 100, fragments: 200)) {
            _ = try assembler.consume(
                Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .moreData, id: 0, size: 100)))
            _ = try assembler.consume(Self.txSlot(NetifTxRequest(grant: 2, offset: 0, flags: [], id: 1, size: 200)))
        }
    }

    @Test func tooManySlotsIsFatal() {
        var assembler = NetifTxAssembler(limits: .init(maxSlots: 1, gso: [], multicastControl: false))
        #expect(throws: NetifProtocolError.tooManySlots(2, limit: 1)) {
            _ = try assembler.consume(
                Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .moreData, id: 0, size: 2000)))
            _ = try assembler.consume(Self.txSlot(NetifTxRequest(grant: 2, offset: 0, flags: [], id: 1, size: 1000)))
        }
        var endless = NetifTxAssembler(limits: Self.limits)
        #expect(throws: NetifProtocolError.tooManySlots(19, limit: 18)) {
            _ = try endless.consume(
                Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .moreData, id: 0, size: 65535)))
            for id in 1...30 {
                _ = try endless.consume(
                    Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .moreData, id: UInt16(id), size: 1)))
            }
        }
    }

    @Test func descriptorsOutsideTheNegotiationAreFatal() {
        func attempt(_ extras: [NetifExtraInfo], limits: NetifTxAssembler.Limits = Self.limits) throws {
            var assembler = NetifTxAssembler(limits: limits)
            _ = try assembler.consume(
                Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .extraInfo, id: 0, size: 60)))
            for extra in extras { _ = try assembler.consume(Self.txSlot(extra)) }
        }
        #expect(throws: NetifProtocolError.unexpectedExtra("GSO type tcpv6 not advertised")) {
            try attempt([NetifExtraInfo(.gso(size: 1400, type: .tcpv6, features: 0))])
        }
        #expect(throws: NetifProtocolError.unexpectedExtra("GSO size 0")) {
            try attempt([NetifExtraInfo(.gso(size: 0, type: .tcpv4, features: 0))])
        }
        #expect(throws: NetifProtocolError.unexpectedExtra("multicast control not advertised")) {
            try attempt(
                [NetifExtraInfo(.multicastAdd(.broadcast))],
                limits: .init(maxSlots: 18, gso: [], multicastControl: false))
        }
        #expect(throws: NetifProtocolError.unexpectedExtra("hash descriptors not negotiated")) {
            try attempt([NetifExtraInfo(.hash(hashType: 0, algorithm: 1, value: 1))])
        }
        #expect(throws: NetifProtocolError.unexpectedExtra("second descriptor of type 1")) {
            try attempt([
                NetifExtraInfo(.gso(size: 1400, type: .tcpv4, features: 0), more: true),
                NetifExtraInfo(.gso(size: 1400, type: .tcpv4, features: 0)),
            ])
        }
        var assembler = NetifTxAssembler(limits: Self.limits)
        #expect(throws: NetifProtocolError.unknownFlags(0x30)) {
            try assembler.consume(
                Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .init(rawValue: 0x30), id: 0, size: 60)))
        }
        var continuation = NetifTxAssembler(limits: Self.limits)
        #expect(throws: NetifProtocolError.unexpectedExtra("on a continuation request")) {
            _ = try continuation.consume(
                Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .moreData, id: 0, size: 120)))
            _ = try continuation.consume(
                Self.txSlot(NetifTxRequest(grant: 1, offset: 0, flags: .extraInfo, id: 1, size: 60)))
        }
    }

    // MARK: - Receive side

    static func rxSlot(_ response: NetifRxResponse) -> PageBuffer {
        let slot = PageBuffer(pages: 1).slice(from: 0, count: Netif.rxEntrySize)
        response.encode(into: slot)
        return slot
    }

    static func rxSlot(_ extra: NetifExtraInfo) -> PageBuffer {
        let slot = PageBuffer(pages: 1).slice(from: 0, count: Netif.rxEntrySize)
        extra.encode(into: slot)
        return slot
    }

    static let rxLimits = NetifRxAssembler.Limits(maxSlots: 18, gso: [.tcpv4])

    @Test func rxFrameWithGSOAndScatterGather() throws {
        var assembler = NetifRxAssembler(limits: Self.rxLimits)
        let first = NetifRxResponse(
            id: 10, offset: 0, flags: [.moreData, .extraInfo, .checksumBlank, .dataValidated], status: 4096)
        #expect(try assembler.consume(Self.rxSlot(first), index: 0, posted: 10) == nil)
        // The descriptor's slot held buffer 11: its id is not echoed (the descriptor overlays it).
        #expect(
            try assembler.consume(
                Self.rxSlot(NetifExtraInfo(.gso(size: 1448, type: .tcpv4, features: 0))), index: 1, posted: 11) == nil)
        let packet = try #require(
            try assembler.consume(
                Self.rxSlot(NetifRxResponse(id: 12, offset: 0, flags: [], status: 904)), index: 2, posted: 12))
        #expect(packet.size == 5000 && packet.error == nil)
        #expect(packet.pieces.map(\.buffer) == [10, 12] && packet.buffers == [10, 11, 12])
        #expect(packet.gso?.size == 1448 && packet.flags.contains(.checksumBlank))
    }

    @Test func rxErrorStatusDropsTheFrame() throws {
        var assembler = NetifRxAssembler(limits: Self.rxLimits)
        let packet = try #require(
            try assembler.consume(
                Self.rxSlot(NetifRxResponse(id: 3, offset: 0, flags: [], status: -1)), index: 0, posted: 3))
        #expect(packet.error == -1 && packet.pieces.isEmpty && packet.buffers == [3])
    }

    @Test func rxHostileResponsesAreFatal() {
        func one(_ response: NetifRxResponse, posted: UInt16 = 1, limits: NetifRxAssembler.Limits = Self.rxLimits)
            throws
        {
            var assembler = NetifRxAssembler(limits: limits)
            _ = try assembler.consume(Self.rxSlot(response), index: 5, posted: posted)
        }
        #expect(throws: NetifProtocolError.idMismatch(slot: 5, expected: 1, got: 2)) {
            try one(NetifRxResponse(id: 2, offset: 0, flags: [], status: 60))
        }
        #expect(throws: NetifProtocolError.fragmentOutsidePage(offset: 4000, size: 1000)) {
            try one(NetifRxResponse(id: 1, offset: 4000, flags: [], status: 1000))
        }
        #expect(throws: NetifProtocolError.badResponseFlags(NetifRxFlags.gsoPrefix.rawValue)) {
            try one(NetifRxResponse(id: 1, offset: 0, flags: .gsoPrefix, status: 60))
        }
        #expect(throws: NetifProtocolError.badResponseFlags(0x40)) {
            try one(NetifRxResponse(id: 1, offset: 0, flags: .init(rawValue: 0x40), status: 60))
        }
        #expect(throws: NetifProtocolError.tooManySlots(2, limit: 1)) {
            var assembler = NetifRxAssembler(limits: .init(maxSlots: 1, gso: []))
            _ = try assembler.consume(
                Self.rxSlot(NetifRxResponse(id: 1, offset: 0, flags: .moreData, status: 100)), index: 0, posted: 1)
            _ = try assembler.consume(
                Self.rxSlot(NetifRxResponse(id: 2, offset: 0, flags: [], status: 100)), index: 1, posted: 2)
        }
        #expect(throws: NetifProtocolError.unexpectedExtra("GSO type tcpv6 not requested")) {
            var assembler = NetifRxAssembler(limits: Self.rxLimits)
            _ = try assembler.consume(
                Self.rxSlot(NetifRxResponse(id: 1, offset: 0, flags: .extraInfo, status: 100)), index: 0, posted: 1)
            _ = try assembler.consume(
                Self.rxSlot(NetifExtraInfo(.gso(size: 1, type: .tcpv6, features: 0))), index: 1, posted: 2)
        }
        #expect(throws: NetifProtocolError.unexpectedExtra("type 2 on the receive ring")) {
            var assembler = NetifRxAssembler(limits: Self.rxLimits)
            _ = try assembler.consume(
                Self.rxSlot(NetifRxResponse(id: 1, offset: 0, flags: .extraInfo, status: 100)), index: 0, posted: 1)
            _ = try assembler.consume(Self.rxSlot(NetifExtraInfo(.multicastAdd(.broadcast))), index: 1, posted: 2)
        }
        #expect(throws: NetifProtocolError.badResponseFlags(NetifRxFlags.extraInfo.rawValue)) {
            var assembler = NetifRxAssembler(limits: Self.rxLimits)
            _ = try assembler.consume(
                Self.rxSlot(NetifRxResponse(id: 1, offset: 0, flags: .moreData, status: 100)), index: 0, posted: 1)
            _ = try assembler.consume(
                Self.rxSlot(NetifRxResponse(id: 2, offset: 0, flags: .extraInfo, status: 100)), index: 1, posted: 2)
        }
        #expect(throws: NetifProtocolError.frameTooLarge(65536, limit: 65535)) {
            var assembler = NetifRxAssembler(limits: .init(maxSlots: 100, gso: []))
            for id in 0..<17 {
                _ = try assembler.consume(
                    Self.rxSlot(NetifRxResponse(id: UInt16(id), offset: 0, flags: .moreData, status: 4096)),
                    index: UInt32(id),
                    posted: UInt16(id))
            }
        }
    }
}
