public import XenCore

/// The frontend's view of a ring.h shared ring: it produces requests and consumes responses.
///
/// Private indices (`req_prod_pvt`, `rsp_cons`) live here; the shared ones live in the ring memory and are
/// written by the peer too, so every value read from them is validated before use. Only the front
/// initialises the shared header (`SHARED_RING_INIT`): a back that did so could erase requests already queued.
///
/// OCaml: `Ring.Rpc.Front` (shared-memory-ring); C: `FRONT_RING_INIT` and the `RING_*` macros of ring.h
public struct FrontRing: Sendable {
    /// The ring's shape.
    public let geometry: SharedRingGeometry
    /// The shared memory (all pages, contiguous).
    public let memory: PageBuffer
    private let header: SharedRingHeader
    /// Requests produced but perhaps not yet pushed (`req_prod_pvt`).
    public private(set) var requestProducer: UInt32 = 0
    /// Responses consumed so far (`rsp_cons`).
    public private(set) var responseConsumer: UInt32 = 0

    /// Initialises the shared header in `memory` (producers 0, event indices 1) and attaches to it.
    ///
    /// C: `SHARED_RING_INIT` + `FRONT_RING_INIT`; OCaml: `Ring.Rpc.of_buf` + `Front.init`
    public init(initialising memory: PageBuffer, geometry: SharedRingGeometry) throws(SharedRingError) {
        guard memory.count >= geometry.byteCount else {
            throw .badGeometry("ring memory is \(memory.count) bytes, geometry needs \(geometry.byteCount)")
        }
        self.geometry = geometry
        self.memory = memory
        self.header = SharedRingHeader(memory: memory)
        memory.slice(from: 0, count: SharedRingGeometry.headerSize).fill(0)
        header.store(1, SharedRingGeometry.requestEventOffset)
        header.store(1, SharedRingGeometry.responseEventOffset)
    }

    /// Test hook: a ring whose indices all start at `start`, to exercise 32-bit wrap-around.
    init(initialising memory: PageBuffer, geometry: SharedRingGeometry, startingAt start: UInt32)
        throws(SharedRingError)
    {
        try self.init(initialising: memory, geometry: geometry)
        requestProducer = start
        responseConsumer = start
        header.store(start, SharedRingGeometry.requestProducerOffset)
        header.store(start, SharedRingGeometry.responseProducerOffset)
        header.store(start &+ 1, SharedRingGeometry.requestEventOffset)
        header.store(start &+ 1, SharedRingGeometry.responseEventOffset)
    }

    /// Entries in the ring.
    public var size: UInt32 { geometry.size }

    /// Request slots free: `size - (req_prod_pvt - rsp_cons)`.
    ///
    /// C: `RING_FREE_REQUESTS`
    public var freeRequests: UInt32 { geometry.size &- (requestProducer &- responseConsumer) }

    /// Requests produced whose responses have not been consumed.
    public var outstanding: UInt32 { requestProducer &- responseConsumer }

    /// The slot for the next request, or nil when the ring is full. The caller writes the request into it
    /// and the slot is counted as produced; it becomes visible to the back at ``pushRequests()``.
    ///
    /// C: `RING_GET_REQUEST(r, r->req_prod_pvt++)`
    public mutating func nextRequestSlot() -> PageBuffer? {
        guard freeRequests > 0 else { return nil }
        let slot = memory.slice(from: geometry.entryOffset(requestProducer), count: geometry.entrySize)
        requestProducer &+= 1
        return slot
    }

    /// Publishes produced requests; true when the back asked to be notified.
    ///
    /// C: `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`
    public mutating func pushRequests() -> Bool {
        let new = requestProducer
        let old = header.load(SharedRingGeometry.requestProducerOffset)
        header.store(new, SharedRingGeometry.requestProducerOffset)
        header.fullBarrier()
        let event = header.load(SharedRingGeometry.requestEventOffset)
        return (new &- event) < (new &- old)
    }

    /// Number of responses the back has published and we have not consumed. Reads `rsp_prod` once and
    /// rejects a value claiming more responses than requests outstanding.
    ///
    /// C: `RING_HAS_UNCONSUMED_RESPONSES`
    public func unconsumedResponses() throws(SharedRingError) -> UInt32 {
        let producer = header.load(SharedRingGeometry.responseProducerOffset)
        let available = producer &- responseConsumer
        guard available <= outstanding else {
            throw .peerResponseOverflow(
                responseProducer: producer, responseConsumer: responseConsumer, requestProducer: requestProducer)
        }
        return available
    }

    /// The slot of the next response; call only after ``unconsumedResponses()`` said one is there. The caller
    /// copies the response out before the slot can be reused by a later request.
    ///
    /// C: `RING_GET_RESPONSE(r, r->rsp_cons++)`
    public mutating func nextResponseSlot() -> PageBuffer {
        precondition(responseConsumer != requestProducer, "no response outstanding")
        let slot = memory.slice(from: geometry.entryOffset(responseConsumer), count: geometry.entrySize)
        responseConsumer &+= 1
        return slot
    }

    /// Consumes every published response, handing each slot to `body`, then re-arms `rsp_event` and checks
    /// again so that a response published meanwhile is not missed. Returns the number consumed.
    ///
    /// C: the `RING_FINAL_CHECK_FOR_RESPONSES` loop; OCaml: `Ring.Rpc.Front.ack_responses`
    public mutating func consumeResponses(_ body: (PageBuffer) -> Void) throws(SharedRingError) -> Int {
        var consumed = 0
        while true {
            var available = try unconsumedResponses()
            while available > 0 {
                body(nextResponseSlot())
                consumed += 1
                available -= 1
            }
            if try !finalCheckForResponses() { return consumed }
        }
    }

    /// Sets `rsp_event = rsp_cons + 1` so the back notifies on its next response, then reports whether one
    /// arrived in between.
    ///
    /// C: `RING_FINAL_CHECK_FOR_RESPONSES`
    public mutating func finalCheckForResponses() throws(SharedRingError) -> Bool {
        if try unconsumedResponses() > 0 { return true }
        header.store(responseConsumer &+ 1, SharedRingGeometry.responseEventOffset)
        header.fullBarrier()
        return try unconsumedResponses() > 0
    }
}
