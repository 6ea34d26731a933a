import Testing
import XenCore
import XenStoreProtocol

/// Feeds `wire` to a fresh parser in chunks of `chunk` bytes and returns every packet it produced.
func parseAll(_ wire: [UInt8], chunk: Int) throws -> [XenStorePacket] {
    var parser = XenStorePacketParser()
    var packets: [XenStorePacket] = []
    var index = 0
    while index < wire.count {
        let end = min(index + chunk, wire.count)
        parser.append(wire[index..<end])
        index = end
        while let packet = try parser.next() { packets.append(packet) }
    }
    #expect(parser.bufferedByteCount == 0)
    return packets
}

@Suite struct RequestGoldenTests {
    @Test(arguments: goldenRequests)
    func encodes(_ example: GoldenRequest) {
        #expect(
            example.request.packet(requestID: example.requestID, transactionID: example.transactionID).bytes
                == example.wire)
    }

    @Test(arguments: goldenRequests, [1, 3, 4096])
    func parsesAndDecodes(_ example: GoldenRequest, chunk: Int) throws {
        let packets = try parseAll(example.wire, chunk: chunk)
        try #require(packets.count == 1)
        #expect(packets[0].requestID == example.requestID)
        #expect(packets[0].transactionID == example.transactionID)
        #expect(try XenStoreRequest(decoding: packets[0]) == example.request)
    }
}

@Suite struct ReplyGoldenTests {
    @Test(arguments: goldenReplies)
    func encodes(_ example: GoldenReply) {
        #expect(
            example.reply.packet(requestID: example.requestID, transactionID: example.transactionID).bytes
                == example.wire)
    }

    @Test(arguments: goldenReplies, [1, 5, 4096])
    func parsesAndDecodes(_ example: GoldenReply, chunk: Int) throws {
        let packets = try parseAll(example.wire, chunk: chunk)
        try #require(packets.count == 1)
        #expect(packets[0].requestID == example.requestID)
        #expect(try XenStoreReply(decoding: packets[0]) == example.reply)
    }
}

@Suite struct ParserTests {
    @Test func manyPacketsInOneStreamAnyChunking() throws {
        let wire = goldenRequests.flatMap(\.wire) + goldenReplies.flatMap(\.wire)
        for chunk in [1, 2, 7, 16, 17, 100, wire.count] {
            let packets = try parseAll(wire, chunk: chunk)
            #expect(packets.count == goldenRequests.count + goldenReplies.count)
            #expect(packets.flatMap(\.bytes) == wire)
        }
    }

    @Test func payloadOfExactly4096IsAccepted() throws {
        let packet = XenStorePacket(type: .write, payload: Array(repeating: 0x41, count: 4096))
        #expect(try parseAll(packet.bytes, chunk: 1000) == [packet])
    }

    @Test func oversizePayloadIsATypedErrorAndPoisonsTheParser() throws {
        var parser = XenStorePacketParser()
        parser.append(golden("02000000 07000000 00000000 01100000", ""))
        #expect(throws: XenStoreProtocolError.payloadTooLarge(type: .read, length: 4097, limit: 4096)) {
            try parser.next()
        }
        parser.append(goldenRequests[0].wire)
        #expect(throws: XenStoreProtocolError.self) { try parser.next() }
    }

    @Test func hugeLengthDoesNotAllocate() {
        var parser = XenStorePacketParser()
        parser.append(golden("02000000 00000000 00000000 ffffffff", ""))
        #expect(throws: XenStoreProtocolError.payloadTooLarge(type: .read, length: .max, limit: 4096)) {
            try parser.next()
        }
    }

    @Test func partialHeaderWaits() throws {
        var parser = XenStorePacketParser()
        parser.append([2, 0, 0])
        #expect(try parser.next() == nil)
        #expect(parser.bufferedByteCount == 3)
    }

    @Test func unknownTypeStillParses() throws {
        let packets = try parseAll(golden("63000000 01000000 00000000 01000000", "\0"), chunk: 1)
        #expect(packets.first?.type == XenStoreMessageType(rawValue: 99))
        #expect(throws: XenStoreProtocolError.unsupportedMessageType(XenStoreMessageType(rawValue: 99))) {
            try XenStoreRequest(decoding: packets[0])
        }
    }
}

@Suite struct MessageTypeTests {
    @Test func wireNumbersAndNames() {
        #expect(XenStoreMessageType.allKnown.count == 23)
        #expect(XenStoreMessageType.resetWatches.rawValue == 21)
        #expect(XenStoreMessageType.directoryPart.name == "DIRECTORY_PART")
        #expect(XenStoreMessageType(rawValue: 20).name == "UNKNOWN(20)")
        #expect(Set(XenStoreMessageType.allKnown.map(\.name)).count == 23)
    }
}
