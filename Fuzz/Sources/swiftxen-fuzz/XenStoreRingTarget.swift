import Dispatch
import Synchronization
import XenCore
import XenStoreClient
import XenStoreProtocol

/// The shared-page xenstore transport with a hostile peer: our end (server or guest) reads and answers whole
/// packets while the peer, each time our side's event pump waits, rewrites the page: ring bytes, either
/// producer or consumer index, the connection (reconnect) and error fields. Our end must end with a typed
/// error or a closed stream, never trap or hang, and never return more than a ring's worth per read.
///
/// Input: a role byte (bit 0: we are the server; bit 1: a guest asks for a reconnect first), the four
/// indices, then the peer's actions, one per event.
enum XenStoreRingTarget {
    typealias L = XenStoreRingLayout

    struct Peer: Sendable {
        var input: FuzzInput
        let weAreServer: Bool

        /// Applies the next action to `page`; false when there is none (the event channel goes away).
        mutating func act(on page: PageBuffer) -> Bool {
            guard !input.isEmpty else { return false }
            // The peer produces on the ring we read and consumes the ring we write.
            let (data, producer) =
                weAreServer ? (L.requestOffset, L.requestProducer) : (L.responseOffset, L.responseProducer)
            let (ourProducer, ourConsumer) =
                weAreServer ? (L.responseProducer, L.responseConsumer) : (L.requestProducer, L.requestConsumer)
            switch input.byte() % 8 {
            case 0:
                let bytes = input.blob()
                let start = page.uint32(at: producer)
                for (index, byte) in bytes.enumerated() {
                    page.setUInt8(byte, at: data + Int((start &+ UInt32(index)) % UInt32(L.ringSize)))
                }
                page.setUInt32(start &+ UInt32(bytes.count), at: producer)
            case 1: page.setUInt32(input.uint32(), at: producer)
            case 2: page.setUInt32(input.uint32(), at: ourConsumer)
            case 3: page.setUInt32(page.uint32(at: ourProducer), at: ourConsumer)
            case 4: page.setUInt32(UInt32(input.byte() % 3), at: L.connection)
            case 5: page.setUInt32(UInt32(input.byte() % 4), at: L.error)
            case 6: page.setUInt32(input.uint32(), at: L.serverFeatures)
            default: break
            }
            return true
        }
    }

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let mode = input.byte()
        let weAreServer = mode & 1 == 1
        let page = PageBuffer(pages: 1)
        for offset in [L.requestConsumer, L.requestProducer, L.responseConsumer, L.responseProducer] {
            page.setUInt32(UInt32(input.byte()) &* 0x0101_0101 >> 6, at: offset)
        }
        let peer = Locked(Peer(input: input, weAreServer: weAreServer))
        let pumpEnded = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        let transport = XenStoreRingTransport(
            page: page, role: weAreServer ? .server : .guest, notify: {},
            waitForEvent: {
                let more = peer.mutex.withLock { $0.act(on: page) }
                if !more { pumpEnded.signal() }
                return more
            })
        let reconnect = !weAreServer && mode & 2 == 2
        // The task gets the transport through a box, not a capture, and lets go of it before it signals: the
        // transport (and the weak reference its pump holds) must be gone when this input ends, or the leak
        // check that follows an input finds it half torn down on another thread.
        let box = Locked<XenStoreRingTransport?>(transport)
        Task {
            var ours = box.mutex.withLock { boxed in
                defer { boxed = nil }
                return boxed
            }
            if let transport = ours {
                await exercise(transport, reconnect: reconnect)
                await transport.pumpEnded()
            }
            ours = nil
            finished.signal()
        }
        finished.wait()
        pumpEnded.wait()
        withExtendedLifetime(transport) {}
    }

    static func exercise(_ transport: XenStoreRingTransport, reconnect: Bool) async {
        var parser = XenStorePacketParser()
        do {
            if reconnect { try await transport.reconnect() }
            while let bytes = try await transport.read() {
                require(!bytes.isEmpty && bytes.count <= L.ringSize, "read returned \(bytes.count) bytes")
                parser.append(bytes)
                while let packet = try? parser.next() {
                    // Answer with the payload echoed: packets of up to 4 KiB + 16 wrap and wait for room.
                    let answer = XenStorePacket(
                        type: .read, requestID: packet.requestID, transactionID: packet.transactionID,
                        payload: packet.payload)
                    try await transport.write(answer.bytes)
                }
            }
        } catch {
            // A typed error ends the connection; that is the expected outcome with a bad peer.
        }
        await transport.close()
    }
}
