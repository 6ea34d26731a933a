import CXen
import Testing
import XenCore

@testable import SharedRing

/// ring.h semantics: geometry, free-running indices, notification decisions, hostile indices.
@Suite struct SharedRingTests {
    static let entry = 112

    private func pair(pages: Int = 1, start: UInt32 = 0) throws -> (FrontRing, BackRing) {
        let geometry = try SharedRingGeometry(entrySize: Self.entry, pages: pages)
        let memory = PageBuffer(pages: pages)
        let front = try FrontRing(initialising: memory, geometry: geometry, startingAt: start)
        let back = try BackRing(attaching: memory, geometry: geometry)
        return (front, back)
    }

    @Test(arguments: [1, 2, 4, 8, 16])
    func geometryMatchesRingH(pages: Int) throws {
        let geometry = try SharedRingGeometry(entrySize: Self.entry, pages: pages)
        #expect(geometry.size == cxen_blkif_ring_size(UInt32(pages)))
        #expect(SharedRingGeometry.headerSize == cxen_blkif_sring_ring_offset())
    }

    @Test func badGeometryIsRejected() {
        #expect(throws: SharedRingError.self) { try SharedRingGeometry(entrySize: 5000, pages: 1) }
        #expect(throws: SharedRingError.self) { try SharedRingGeometry(entrySize: 0, pages: 1) }
        let geometry = try! SharedRingGeometry(entrySize: 112, pages: 2)
        #expect(throws: SharedRingError.self) { try FrontRing(initialising: PageBuffer(pages: 1), geometry: geometry) }
    }

    @Test func initialisationWritesRingHDefaults() throws {
        let memory = PageBuffer(pages: 1)
        memory.fill(0xEE)
        let geometry = try SharedRingGeometry(entrySize: Self.entry, pages: 1)
        _ = try FrontRing(initialising: memory, geometry: geometry)
        #expect(memory.uint32(at: 0) == 0)  // req_prod
        #expect(memory.uint32(at: 4) == 1)  // req_event
        #expect(memory.uint32(at: 8) == 0)  // rsp_prod
        #expect(memory.uint32(at: 12) == 1)  // rsp_event
        #expect(memory.slice(from: 16, count: 48).bytes == [UInt8](repeating: 0, count: 48))
        // The back attaches without touching the header.
        memory.setUInt32(0xABCD, at: 16)
        _ = try BackRing(attaching: memory, geometry: geometry)
        #expect(memory.uint32(at: 16) == 0xABCD)
    }

    /// Requests and responses flow through several laps of the ring, across the 2^32 wrap.
    @Test(arguments: [UInt32(0), UInt32.max - 40])
    func roundTripAcrossWrap(start: UInt32) throws {
        var (front, back) = try pair(start: start)
        var next: UInt64 = 0
        var answered: [UInt64] = []
        for _ in 0..<10 {
            while let slot = front.nextRequestSlot() {
                slot.setUInt64(next, at: 0)
                next += 1
            }
            #expect(front.freeRequests == 0)
            _ = front.pushRequests()
            let count = try back.unconsumedRequests()
            #expect(count == 32)
            for _ in 0..<count {
                let value = back.nextRequestSlot().uint64(at: 0)
                back.nextResponseSlot()!.setUInt64(value &* 3, at: 0)
            }
            _ = back.pushResponses()
            _ = try front.consumeResponses { answered.append($0.uint64(at: 0)) }
            #expect(front.freeRequests == 32)
        }
        #expect(answered == (0..<320).map { $0 * 3 })
    }

    @Test func notificationFollowsEventIndices() throws {
        var (front, back) = try pair()
        _ = front.nextRequestSlot()
        let first = front.pushRequests()
        #expect(first)  // req_event = 1 initially: first request notifies
        _ = front.nextRequestSlot()
        let second = front.pushRequests()
        #expect(!second)  // back has not re-armed
        #expect(try back.unconsumedRequests() == 2)
        _ = back.nextRequestSlot()
        _ = back.nextRequestSlot()
        let pendingAfterRearm = try back.finalCheckForRequests()
        #expect(!pendingAfterRearm)  // re-arms req_event = 3
        _ = front.nextRequestSlot()
        let third = front.pushRequests()
        #expect(third)
        let pending = try back.finalCheckForRequests()
        #expect(pending)
        _ = back.nextRequestSlot()
        for _ in 0..<3 { _ = back.nextResponseSlot() }
        let notifyFront = back.pushResponses()
        #expect(notifyFront)  // rsp_event = 1 initially
        _ = try front.consumeResponses { _ in }
        #expect(front.outstanding == 0)
    }

    @Test func backendOverflowingResponsesIsRejected() throws {
        var (front, _) = try pair()
        _ = front.nextRequestSlot()
        _ = front.pushRequests()
        front.memory.setUInt32(5, at: 8)  // rsp_prod: five responses for one request
        #expect(throws: SharedRingError.self) { try front.unconsumedResponses() }
        front.memory.setUInt32(UInt32.max, at: 8)  // "negative" count
        #expect(throws: SharedRingError.self) { _ = try front.consumeResponses { _ in } }
    }

    @Test func frontendOverflowingRequestsIsRejected() throws {
        let (front, back) = try pair()
        front.memory.setUInt32(33, at: 0)  // req_prod: 33 requests in a 32-entry ring
        #expect(throws: SharedRingError.self) { try back.unconsumedRequests() }
        front.memory.setUInt32(UInt32.max, at: 0)
        #expect(throws: SharedRingError.self) { try back.unconsumedRequests() }
        front.memory.setUInt32(32, at: 0)
        #expect(try back.unconsumedRequests() == 32)
    }

    /// A back that has consumed a full ring without answering may not consume more, whatever req_prod says.
    @Test func backNeverConsumesBeyondItsResponses() throws {
        var (front, back) = try pair()
        while front.nextRequestSlot() != nil {}
        _ = front.pushRequests()
        for _ in 0..<32 { _ = back.nextRequestSlot() }
        front.memory.setUInt32(40, at: 0)
        #expect(throws: SharedRingError.self) { try back.unconsumedRequests() }
        _ = back.nextResponseSlot()
        _ = back.pushResponses()
        #expect(back.pendingResponses == 31)
    }

    @Test func multiPageRingUsesAllEntries() throws {
        var (front, back) = try pair(pages: 4)
        var produced = 0
        while let slot = front.nextRequestSlot() {
            slot.setUInt32(UInt32(produced), at: 0)
            produced += 1
        }
        #expect(produced == 128)
        _ = front.pushRequests()
        #expect(try back.unconsumedRequests() == 128)
        for index in 0..<128 { #expect(back.nextRequestSlot().uint32(at: 0) == UInt32(index)) }
    }
}
