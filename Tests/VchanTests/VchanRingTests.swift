import Testing
import Vchan
import XenCore

/// The pure rings over one page shared by both roles (in-page rings: left 1024 at 1024, right 2048 at
/// 2048): the notification rules of libxenvchan's io.c, index validation, wrap-around.
@Suite struct VchanRingTests {
    struct Pair {
        let page = PageBuffer(pages: 1)
        let serverReceive: VchanReceiveRing
        let serverSend: VchanSendRing
        var clientReceive: VchanReceiveRing
        var clientSend: VchanSendRing

        init() throws {
            let sizes = try VchanRingSizes.server(readMinimum: 1024, writeMinimum: 2048)
            VchanControlPage.initialiseServerPage(page, sizes: sizes, grants: [])
            let server = VchanControlPage(page: page, role: .server)
            let client = VchanControlPage(page: page, role: .client)
            let left = page.slice(from: 1024, count: 1024)
            let right = page.slice(from: 2048, count: 2048)
            serverReceive = try VchanReceiveRing(control: server, data: left)
            serverSend = try VchanSendRing(control: server, data: right)
            clientReceive = try VchanReceiveRing(control: client, data: right)
            clientSend = try VchanSendRing(control: client, data: left)
        }
    }

    @Test func bytesCrossAndWrap() throws {
        var pair = try Pair()
        var server = pair.serverReceive
        var received: [UInt8] = []
        // 5 rounds of 700 bytes through a 1024-byte ring: wraps several times.
        for round in 0..<5 {
            let chunk = patternBytes(count: 700, seed: UInt64(round))
            let (written, _) = try chunk.withUnsafeBytes { try pair.clientSend.write($0) }
            #expect(written == 700)
            #expect(try server.available() == 700)
            var out = [UInt8](repeating: 0, count: 700)
            let (read, _) = try out.withUnsafeMutableBytes { try server.read(into: $0) }
            #expect(read == 700)
            received += out
            #expect(out == chunk)
        }
        #expect(received.count == 3500)
        #expect(pair.page.uint32(at: VchanLayout.leftProducerOffset) == 3500)
        #expect(pair.page.uint32(at: VchanLayout.leftConsumerOffset) == 3500)
    }

    @Test func fullRingTakesNoMore() throws {
        var pair = try Pair()
        let big = patternBytes(count: 5000, seed: 9)
        let (written, _) = try big.withUnsafeBytes { try pair.clientSend.write($0) }
        #expect(written == 1024)
        #expect(try pair.clientSend.space() == 0)
        let (more, _) = try big.withUnsafeBytes { try pair.clientSend.write($0) }
        #expect(more == 0)
    }

    /// The reader's side of the race libxenvchan's `fast_get_data_ready` closes: a write that lands after
    /// the first look but before the request sends no event (the writer saw no request), so the reader must
    /// look again after requesting; a write after the request does send one.
    @Test func readerLooksAgainAfterRequesting() throws {
        var pair = try Pair()
        let server = pair.serverReceive
        pair.page.setUInt8(0, at: VchanLayout.clientNotifyOffset)
        // `available(requestingNotifyBelow:)` step by step: the first look finds nothing...
        #expect(try server.available() == 0)
        // ...the client writes now, and nobody has asked it to notify yet: no event...
        let (_, notified) = try ([1, 2, 3] as [UInt8]).withUnsafeBytes { try pair.clientSend.write($0) }
        #expect(!notified, "no request was pending, so libxenvchan sends no event")
        // ...so after asking, the reader must look again, and finds the bytes instead of sleeping.
        server.control.requestNotify(VchanLayout.notifyWrite)
        #expect(try server.available() == 3)
    }

    /// The combined call asks only when short, and a write after the request signals (once).
    @Test func requestThenSignal() throws {
        var pair = try Pair()
        var server = pair.serverReceive
        pair.page.setUInt8(0, at: VchanLayout.clientNotifyOffset)
        #expect(try server.available(requestingNotifyBelow: 1) == 0)
        #expect(pair.page.uint8(at: VchanLayout.clientNotifyOffset) == VchanLayout.notifyWrite, "asked")
        let (_, first) = try ([4] as [UInt8]).withUnsafeBytes { try pair.clientSend.write($0) }
        #expect(first, "the request bit makes the writer send an event")
        #expect(pair.page.uint8(at: VchanLayout.clientNotifyOffset) & VchanLayout.notifyWrite == 0, "cleared")
        let (_, second) = try ([5] as [UInt8]).withUnsafeBytes { try pair.clientSend.write($0) }
        #expect(!second, "one event per request")
        // Enough data already: no request is made.
        #expect(try server.available(requestingNotifyBelow: 2) == 2)
        #expect(pair.page.uint8(at: VchanLayout.clientNotifyOffset) == 0)
        var sink = [UInt8](repeating: 0, count: 2)
        _ = try sink.withUnsafeMutableBytes { try server.read(into: $0) }
        #expect(sink == [4, 5])
    }

    /// The writer's side: room made after the first look but before the request is seen on the second
    /// look; room made after it signals.
    @Test func writerLooksAgainAfterRequesting() throws {
        var pair = try Pair()
        var server = pair.serverReceive
        _ = try patternBytes(count: 1024, seed: 1).withUnsafeBytes { try pair.clientSend.write($0) }
        #expect(try pair.clientSend.space() == 0)
        pair.page.setUInt8(0, at: VchanLayout.serverNotifyOffset)
        var sink = [UInt8](repeating: 0, count: 100)
        let (_, notified) = try sink.withUnsafeMutableBytes { try server.read(into: $0) }
        #expect(!notified)
        #expect(try pair.clientSend.space(requestingNotifyBelow: 200) == 100)
        let (_, second) = try sink.withUnsafeMutableBytes { try server.read(into: $0) }
        #expect(second, "the client asked to hear about reads")
    }

    @Test func requestsAreAtomicBits() throws {
        let pair = try Pair()
        let server = pair.serverReceive.control
        let client = pair.clientSend.control
        server.requestNotify(VchanLayout.notifyWrite)
        server.requestNotify(VchanLayout.notifyRead)
        #expect(pair.page.uint8(at: VchanLayout.clientNotifyOffset) == 3)
        #expect(client.takeNotifyRequest(VchanLayout.notifyRead))
        #expect(!client.takeNotifyRequest(VchanLayout.notifyRead), "taken once")
        #expect(pair.page.uint8(at: VchanLayout.clientNotifyOffset) == 1, "the other bit stays")
        #expect(client.notifyBytes.fromPeer == 1)
    }

    @Test func producerBeyondTheRingIsAnError() throws {
        let pair = try Pair()
        pair.page.setUInt32(1025, at: VchanLayout.leftProducerOffset)
        #expect(throws: VchanError.producerOutOfRange(producer: 1025, consumer: 0, size: 1024)) {
            try pair.serverReceive.available()
        }
        pair.page.setUInt32(0xFFFF_FFFF, at: VchanLayout.leftProducerOffset)  // behind the consumer
        #expect(throws: VchanError.producerOutOfRange(producer: 0xFFFF_FFFF, consumer: 0, size: 1024)) {
            var ring = pair.serverReceive
            var sink = [UInt8](repeating: 0, count: 8)
            _ = try sink.withUnsafeMutableBytes { try ring.read(into: $0) }
        }
    }

    @Test func consumerAheadOfTheProducerIsAnError() throws {
        let pair = try Pair()
        pair.page.setUInt32(5, at: VchanLayout.rightConsumerOffset)
        #expect(throws: VchanError.consumerOutOfRange(producer: 0, consumer: 5, size: 2048)) {
            try pair.serverSend.space()
        }
    }

    /// A peer rewriting *our* index cannot move us: we keep our own copy and only publish it.
    @Test func ourIndexIsOurs() throws {
        var pair = try Pair()
        _ = try ([1, 2, 3, 4] as [UInt8]).withUnsafeBytes { try pair.clientSend.write($0) }
        pair.page.setUInt32(4, at: VchanLayout.leftProducerOffset)
        pair.page.setUInt32(77, at: VchanLayout.leftConsumerOffset)  // the server's index, scribbled on
        var server = pair.serverReceive
        #expect(try server.available() == 4)
        var sink = [UInt8](repeating: 0, count: 4)
        _ = try sink.withUnsafeMutableBytes { try server.read(into: $0) }
        #expect(sink == [1, 2, 3, 4])
        #expect(pair.page.uint32(at: VchanLayout.leftConsumerOffset) == 4)
    }

    @Test func liveBytes() throws {
        let pair = try Pair()
        let server = pair.serverReceive.control
        let client = pair.clientReceive.control
        #expect(try server.peerState() == .waitingForConnection)
        #expect(try client.peerState() == .connected)
        client.setOwnState(.connected)
        #expect(try server.peerState() == .connected)
        pair.page.setUInt8(2, at: VchanLayout.serverLiveOffset)
        #expect(throws: VchanError.invalidLiveState(2), "a server never says waiting") { try client.peerState() }
        pair.page.setUInt8(7, at: VchanLayout.clientLiveOffset)
        #expect(throws: VchanError.invalidLiveState(7)) { try server.peerState() }
    }

    @Test func attachingToImpossibleIndicesFails() throws {
        let page = PageBuffer(pages: 1)
        VchanControlPage.initialiseServerPage(
            page, sizes: try VchanRingSizes(leftOrder: 10, rightOrder: 11), grants: [])
        page.setUInt32(4096, at: VchanLayout.rightProducerOffset)
        let client = VchanControlPage(page: page, role: .client)
        #expect(throws: VchanError.producerOutOfRange(producer: 4096, consumer: 0, size: 2048)) {
            try VchanReceiveRing(control: client, data: page.slice(from: 2048, count: 2048))
        }
    }
}
