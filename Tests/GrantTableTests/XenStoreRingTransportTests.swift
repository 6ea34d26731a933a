import EventChannel
import GrantTable
import SimulatedHypervisor
import Testing
import XenCore
import XenStoreClient

/// The xenstore ring transport between a simulated guest and dom0, over a granted page and an event channel.
@Suite struct XenStoreRingTransportTests {
    let hypervisor = SimulatedHypervisor()
    let guest: SimulatedDomain

    init() throws { guest = try hypervisor.createDomain(name: "guest") }

    /// Guest grants its ring page to dom0 and offers a port; dom0 maps the page and connects.
    func connect(
        prepare: (PageBuffer) -> Void = { _ in }
    ) throws -> (guest: XenStoreRingTransport, server: XenStoreRingTransport, mapping: GrantMappingHandle) {
        let page = PageBuffer(pages: 1)
        prepare(page)
        try guest.grantTable.grantAccess(.reservedXenstore, to: .dom0, writable: true, page: page)
        let mapping = GrantMappingHandle(
            try hypervisor.dom0.grantTable.map(domain: guest.id, ref: .reservedXenstore, writable: true))
        let guestChannel = guest.eventChannel
        let serverChannel = hypervisor.dom0.eventChannel
        let guestPort = try guestChannel.bindUnboundPort(remote: .dom0)
        let serverPort = try serverChannel.bindInterdomain(remote: guest.id, remotePort: guestPort)
        let server = XenStoreRingTransport(
            page: mapping.buffer, role: .server, notify: { try serverChannel.notify(serverPort) },
            waitForEvent: {
                var events = serverChannel.notifications(serverPort).makeAsyncIterator()
                return await events.next() != nil
            })
        let client = XenStoreRingTransport(
            page: page, role: .guest, notify: { try guestChannel.notify(guestPort) },
            waitForEvent: {
                var events = guestChannel.notifications(guestPort).makeAsyncIterator()
                return await events.next() != nil
            })
        return (client, server, mapping)
    }

    static func pattern(_ count: Int, seed: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 * 31 + seed) }
    }

    static func readExactly(_ count: Int, from transport: XenStoreRingTransport) async throws -> [UInt8] {
        var received: [UInt8] = []
        while received.count < count {
            guard let chunk = try await transport.read() else { break }
            #expect(chunk.count <= XenStoreRingLayout.ringSize)
            received += chunk
        }
        return received
    }

    @Test func bytesLargerThanTheRingFlowBothWaysInOrder() async throws {
        let (client, server, _) = try connect()
        let request = Self.pattern(5000, seed: 1)
        let response = Self.pattern(3333, seed: 7)
        async let written: Void = client.write(request)
        async let answered: Void = server.write(response)
        async let atServer = Self.readExactly(request.count, from: server)
        async let atGuest = Self.readExactly(response.count, from: client)
        try await written
        try await answered
        #expect(try await atServer == request)
        #expect(try await atGuest == response)
        await client.close()
        await server.close()
    }

    @Test func indicesNeedNotStartAtZeroAndWrapAround() async throws {
        let start: UInt32 = 0xFFFF_FE00
        let (client, server, _) = try connect { page in
            for offset in [2048, 2052, 2056, 2060] { page.setUInt32(start, at: offset) }
            // Garbage in the unused buffers must not matter either.
            for index in 0..<2048 { page.setUInt8(0xEE, at: index) }
        }
        let request = Self.pattern(3000, seed: 3)
        async let written: Void = client.write(request)
        let received = try await Self.readExactly(request.count, from: server)
        try await written
        #expect(received == request)
        #expect(client.page.uint32(at: XenStoreRingLayout.requestProducer) == start &+ 3000)
        #expect(client.page.uint32(at: XenStoreRingLayout.requestConsumer) == start &+ 3000)
    }

    @Test func concurrentWritesDoNotInterleave() async throws {
        let (client, server, _) = try connect()
        let first = [UInt8](repeating: 0xAA, count: 1500)
        let second = [UInt8](repeating: 0xBB, count: 1500)
        async let one: Void = client.write(first)
        async let two: Void = client.write(second)
        let received = try await Self.readExactly(3000, from: server)
        try await one
        try await two
        #expect(received == first + second || received == second + first)
    }

    @Test func serverAdvertisesFeaturesAndDetectsBadIndices() async throws {
        let (_, server, mapping) = try connect()
        let features = mapping.buffer.uint32(at: XenStoreRingLayout.serverFeatures)
        #expect(features & XenStoreRingLayout.featureReconnection != 0)
        #expect(features & XenStoreRingLayout.featureError != 0)
        // A hostile guest claims 2000 bytes in a 1024-byte ring.
        mapping.buffer.setUInt32(10, at: XenStoreRingLayout.requestConsumer)
        mapping.buffer.setUInt32(2010, at: XenStoreRingLayout.requestProducer)
        await #expect(throws: XenStoreRingError.inconsistentIndices(producer: 2010, consumer: 10)) {
            try await server.read()
        }
        #expect(mapping.buffer.uint32(at: XenStoreRingLayout.error) == 2)
        #expect(try await server.read() == nil)
    }

    @Test func guestSeesServerErrorsAndBadIndices() async throws {
        let (client, _, mapping) = try connect()
        mapping.buffer.setUInt32(5000, at: XenStoreRingLayout.responseProducer)
        await #expect(throws: XenStoreRingError.inconsistentIndices(producer: 5000, consumer: 0)) {
            try await client.read()
        }
        mapping.buffer.setUInt32(0, at: XenStoreRingLayout.responseProducer)
        mapping.buffer.setUInt32(3, at: XenStoreRingLayout.error)
        await #expect(throws: XenStoreRingError.serverError(3)) { try await client.write([1, 2, 3]) }
    }

    @Test func reconnectEmptiesTheQueuesAndEndsTheServerStream() async throws {
        let (client, server, mapping) = try connect()
        try await client.write([1, 2, 3])
        #expect(try await server.read() == [1, 2, 3])
        try await client.write([4, 5])
        #expect(try await server.read() == [4, 5])
        try await server.write([9, 9, 9])
        // The server end is reading when the guest asks for a reconnect: it resets the ring and ends.
        let waiting = Task { try await server.read() }
        try await client.reconnect()
        #expect(try await waiting.value == nil)
        #expect(mapping.buffer.uint32(at: XenStoreRingLayout.connection) == 0)
        let buffer = mapping.buffer
        typealias L = XenStoreRingLayout
        #expect(buffer.uint32(at: L.requestConsumer) == buffer.uint32(at: L.requestProducer))
        // The unread response was dropped.
        #expect(buffer.uint32(at: L.responseConsumer) == buffer.uint32(at: L.responseProducer))
        await client.close()
        await #expect(throws: XenStoreRingError.closed) { try await client.write([1]) }
        #expect(try await client.read() == nil)
    }

    @Test func reconnectNeedsTheServerFeature() async throws {
        let page = PageBuffer(pages: 1)
        let client = XenStoreRingTransport(page: page, role: .guest, notify: {}, waitForEvent: { false })
        await #expect(throws: XenStoreRingError.reconnectionUnsupported) { try await client.reconnect() }
    }
}
