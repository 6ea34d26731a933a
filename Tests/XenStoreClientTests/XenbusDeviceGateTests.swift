import Testing
import XenStoreProtocol

@testable import XenStoreClient

/// The device gate's pure state machine: one packet at the device until a reply (not a watch event) has
/// been read back in full, however the reads split it.
@Suite struct XenbusDeviceGateTests {
    private func request(_ id: UInt32, _ path: String) -> [UInt8] {
        XenStorePacket(type: .read, requestID: id, payload: Array(path.utf8) + [0]).bytes
    }

    @Test func oneRequestAtATimeInSubmissionOrder() {
        var gate = XenbusDeviceGate()
        // One batch of three packets, as the multiplexer writes them.
        let first = gate.submit(request(1, "/a") + request(2, "/bb") + request(3, "/ccc"))
        #expect(first == request(1, "/a"))
        #expect(gate.inFlight)
        #expect(gate.waiting == 2)
        #expect(gate.submit(request(4, "/d")) == nil)
        #expect(gate.waiting == 3)

        let reply = XenStorePacket(type: .read, requestID: 1, payload: Array("value".utf8)).bytes
        #expect(gate.received(reply) == request(2, "/bb"))
        let empty = XenStorePacket(type: .read, requestID: 2, payload: []).bytes
        #expect(gate.received(empty) == request(3, "/ccc"))
        #expect(gate.received(reply) == request(4, "/d"))
        #expect(gate.received(reply) == nil)
        #expect(!gate.inFlight)
        #expect(gate.submit(request(5, "/e")) == request(5, "/e"))
    }

    @Test func watchEventsKeepTheSlotAndSplitReadsAreReassembled() {
        var gate = XenbusDeviceGate()
        #expect(gate.submit(request(1, "/a") + request(2, "/b")) == request(1, "/a"))
        let event = XenStorePacket(type: .watchEvent, payload: Array("/w\u{0}tok\u{0}".utf8)).bytes
        #expect(gate.received(event) == nil)
        #expect(gate.inFlight)
        // An event and the reply in one read, then the reply split inside its header and its body.
        let reply = XenStorePacket(type: .read, requestID: 1, payload: Array("abcdef".utf8)).bytes
        #expect(gate.received(event + reply[0..<10]) == nil)
        #expect(gate.received(Array(reply[10..<19])) == nil)
        #expect(gate.received(Array(reply[19...])) == request(2, "/b"))
    }

    @Test func aRefusedWriteFreesTheSlotAndCloseDropsTheQueue() {
        var gate = XenbusDeviceGate()
        #expect(gate.submit(request(1, "/a") + request(2, "/b") + request(3, "/c")) == request(1, "/a"))
        #expect(gate.writeFailed() == request(2, "/b"))
        gate.close()
        #expect(gate.waiting == 0)
        let reply = XenStorePacket(type: .error, requestID: 2, payload: Array("EINVAL".utf8) + [0]).bytes
        #expect(gate.received(reply) == nil)
        #expect(!gate.inFlight)
    }
}
