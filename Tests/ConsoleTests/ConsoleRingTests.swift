import CXen
import ConsoleBackend
import Testing
import XenCore

/// The pure console ring: layout against console.h, both directions, wrap-around, hostile indices.
@Suite struct ConsoleRingTests {
    // MARK: - Layout

    @Test func layoutMatchesConsoleHeader() {
        #expect(ConsoleRingLayout.inOffset == cxen_xencons_in_offset())
        #expect(ConsoleRingLayout.inSize == cxen_xencons_in_size())
        #expect(ConsoleRingLayout.outOffset == cxen_xencons_out_offset())
        #expect(ConsoleRingLayout.outSize == cxen_xencons_out_size())
        #expect(ConsoleRingLayout.inConsOffset == cxen_xencons_in_cons_offset())
        #expect(ConsoleRingLayout.inProdOffset == cxen_xencons_in_prod_offset())
        #expect(ConsoleRingLayout.outConsOffset == cxen_xencons_out_cons_offset())
        #expect(ConsoleRingLayout.outProdOffset == cxen_xencons_out_prod_offset())
        #expect(ConsoleRingLayout.disconnected == cxen_xencons_disconnected())
        let connection = cxen_xencons_connection_offset()
        if connection >= 0 {
            // Xen 4.21+ headers: the byte is in the struct.
            #expect(ConsoleRingLayout.connectionOffset == connection)
        } else {
            // Xen 4.17-4.20 headers: the struct ends right where 4.21 put the byte.
            #expect(ConsoleRingLayout.connectionOffset == cxen_xencons_size())
        }
        #expect(ConsoleRingLayout.minimumPageSize <= xenPageSize)
    }

    // MARK: - Both directions

    @Test func guestOutputReachesBackend() throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        var guest = try ConsoleRing(page: page, side: .frontend)
        var backend = try ConsoleRing(page: page, side: .backend)
        #expect(try guest.write(Array("hello, world\n".utf8)) == 13)
        #expect(page.uint32(at: ConsoleRingLayout.outProdOffset) == 13)
        #expect(page.bytes[1024..<1037] == Array("hello, world\n".utf8)[...])
        #expect(try backend.readableCount() == 13)
        #expect(try backend.read() == Array("hello, world\n".utf8))
        #expect(page.uint32(at: ConsoleRingLayout.outConsOffset) == 13)
        #expect(try backend.read() == [])
    }

    @Test func backendInputReachesGuest() throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        var guest = try ConsoleRing(page: page, side: .frontend)
        var backend = try ConsoleRing(page: page, side: .backend)
        #expect(try backend.write(Array("ls\r".utf8)) == 3)
        #expect(page.bytes[0..<3] == Array("ls\r".utf8)[...])
        #expect(page.uint32(at: ConsoleRingLayout.inProdOffset) == 3)
        #expect(try guest.read(maximum: 2) == Array("ls".utf8))
        #expect(try guest.read(maximum: 2) == Array("\r".utf8))
        #expect(page.uint32(at: ConsoleRingLayout.inConsOffset) == 3)
    }

    @Test func fullRingAcceptsNothingUntilDrained() throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        var guest = try ConsoleRing(page: page, side: .frontend)
        var backend = try ConsoleRing(page: page, side: .backend)
        let data = (0..<3000).map { UInt8(truncatingIfNeeded: $0) }
        #expect(try guest.write(data) == 2048)
        #expect(try guest.writableCount() == 0)
        #expect(try guest.write(Array(data[2048...])) == 0)
        #expect(try backend.read(maximum: 100) == Array(data[0..<100]))
        #expect(try guest.write(Array(data[2048...])) == 100)
        var received = try backend.read(maximum: 4096)
        #expect(received.count == 2048)
        received = Array(data[0..<100]) + received
        #expect(received == Array(data[0..<2148]))
    }

    @Test func initialConsoleBytesWrittenBeforeAttachAreKept() throws {
        // The initial console page is not zeroed: the guest printed before the backend attached.
        let page = PageBuffer(pages: 1)
        var guest = try ConsoleRing(page: page, side: .frontend)
        _ = try guest.write(Array("early boot\n".utf8))
        var backend = try ConsoleRing(page: page, side: .backend)
        #expect(try backend.read() == Array("early boot\n".utf8))
    }

    // MARK: - Wrap-around

    @Test(arguments: [UInt32.max - 5, UInt32.max - 2047, UInt32.max, 0x7FFF_FFFF])
    func indicesWrapAroundUInt32(start: UInt32) throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        for offset in [
            ConsoleRingLayout.inConsOffset, ConsoleRingLayout.inProdOffset, ConsoleRingLayout.outConsOffset,
            ConsoleRingLayout.outProdOffset,
        ] {
            page.setUInt32(start, at: offset)
        }
        var guest = try ConsoleRing(page: page, side: .frontend)
        var backend = try ConsoleRing(page: page, side: .backend)
        var sent: [UInt8] = []
        var received: [UInt8] = []
        var echoed: [UInt8] = []
        var seed: UInt32 = start
        for round in 0..<200 {
            let length = (round * 37) % 1500 + 1
            let chunk = (0..<length).map { _ in
                seed = seed &* 1_664_525 &+ 1_013_904_223
                return UInt8(truncatingIfNeeded: seed >> 24)
            }
            var rest = chunk[...]
            while !rest.isEmpty {
                let wrote = try guest.write(Array(rest))
                rest = rest.dropFirst(wrote)
                let got = try backend.read(maximum: 700)
                received += got
                // Echo back through the smaller `in` ring.
                var echo = got[...]
                while !echo.isEmpty {
                    let n = try backend.write(Array(echo))
                    echo = echo.dropFirst(n)
                    echoed += try guest.read()
                }
            }
            sent += chunk
        }
        received += try backend.read(maximum: 4096)
        var tail = received[echoed.count...]
        while !tail.isEmpty {
            let n = try backend.write(Array(tail))
            tail = tail.dropFirst(n)
            echoed += try guest.read()
        }
        #expect(received == sent)
        #expect(echoed == sent)
        let finalIndex = page.uint32(at: ConsoleRingLayout.outProdOffset)
        #expect(finalIndex == start &+ UInt32(sent.count))
        #expect(page.uint32(at: ConsoleRingLayout.inProdOffset) == start &+ UInt32(sent.count))
    }

    // MARK: - Hostile indices

    @Test func producerMoreThanARingAheadIsAnError() throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        var backend = try ConsoleRing(page: page, side: .backend)
        page.setUInt32(2049, at: ConsoleRingLayout.outProdOffset)
        #expect(throws: ConsoleRingError.producerOutOfRange(ring: .output, producer: 2049, consumer: 0, size: 2048)) {
            _ = try backend.read()
        }
        // Exactly a full ring is fine.
        page.setUInt32(2048, at: ConsoleRingLayout.outProdOffset)
        #expect(try backend.read(maximum: 4096).count == 2048)
    }

    @Test func producerBehindConsumerIsAnError() throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        var guest = try ConsoleRing(page: page, side: .frontend)
        page.setUInt32(10, at: ConsoleRingLayout.inProdOffset)
        #expect(try guest.read().count == 10)
        page.setUInt32(4, at: ConsoleRingLayout.inProdOffset)  // the backend moved its producer backwards
        #expect(throws: ConsoleRingError.producerOutOfRange(ring: .input, producer: 4, consumer: 10, size: 1024)) {
            _ = try guest.read()
        }
    }

    @Test func consumerAheadOfProducerIsAnError() throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        var backend = try ConsoleRing(page: page, side: .backend)
        page.setUInt32(7, at: ConsoleRingLayout.inConsOffset)  // the guest claims to have read unwritten bytes
        #expect(throws: ConsoleRingError.consumerOutOfRange(ring: .input, producer: 0, consumer: 7, size: 1024)) {
            _ = try backend.write(Array("x".utf8))
        }
    }

    @Test func peerScribblingOurOwnIndexIsIgnored() throws {
        // Our own indices are private: a guest overwriting out_cons cannot make the backend re-read or skip.
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        var guest = try ConsoleRing(page: page, side: .frontend)
        var backend = try ConsoleRing(page: page, side: .backend)
        _ = try guest.write(Array("abc".utf8))
        #expect(try backend.read() == Array("abc".utf8))
        // A hostile guest overwrites out_cons (the backend's index) and produces two more bytes by hand.
        page.setUInt32(0xDEAD_BEEF, at: ConsoleRingLayout.outConsOffset)
        #expect(try backend.read() == [])
        page.setUInt8(UInt8(ascii: "d"), at: ConsoleRingLayout.outOffset + 3)
        page.setUInt8(UInt8(ascii: "e"), at: ConsoleRingLayout.outOffset + 4)
        page.setUInt32(5, at: ConsoleRingLayout.outProdOffset)
        #expect(try backend.read() == Array("de".utf8))
        #expect(backend.consumer == 5)
        #expect(page.uint32(at: ConsoleRingLayout.outConsOffset) == 5)
    }

    @Test func impossibleIndicesAtAttachAreAnError() {
        let page = PageBuffer(pages: 1)
        page.setUInt32(0x1000_0000, at: ConsoleRingLayout.outProdOffset)
        #expect(throws: ConsoleRingError.self) { _ = try ConsoleRing(page: page, side: .backend) }
    }

    @Test func tooSmallPageIsAnError() {
        let page = PageBuffer(pages: 1).slice(from: 0, count: 3000)
        #expect(throws: ConsoleRingError.pageTooSmall(bytes: 3000)) { _ = try ConsoleRing(page: page, side: .frontend) }
    }

    @Test func connectionFlag() throws {
        let page = PageBuffer(pages: 1)
        ConsoleRing.initialise(page: page)
        let backend = try ConsoleRing(page: page, side: .backend)
        #expect(backend.connection == ConsoleRingLayout.disconnected)
        backend.connection = ConsoleRingLayout.connected
        #expect(page.uint8(at: 3088) == 0)
    }
}
