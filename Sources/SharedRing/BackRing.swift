public import XenCore

/// The backend's view of a ring.h shared ring: it consumes requests and produces responses.
///
/// It never initialises the header (the front did, and may already have queued requests). The front is
/// untrusted: `req_prod` is read once per batch and rejected when it claims more requests than fit.
///
/// OCaml: `Ring.Rpc.Back` (shared-memory-ring); C: `BACK_RING_ATTACH` and the `RING_*` macros of ring.h
public struct BackRing: Sendable {
    /// The ring's shape.
    public let geometry: SharedRingGeometry
    /// The shared memory (all pages, contiguous).
    public let memory: PageBuffer
    private let header: SharedRingHeader
    /// Requests consumed so far (`req_cons`).
    public private(set) var requestConsumer: UInt32
    /// Responses produced but perhaps not yet pushed (`rsp_prod_pvt`).
    public private(set) var responseProducer: UInt32

    /// Attaches to a ring the front initialised, starting at its current `rsp_prod` (0 on a fresh ring).
    ///
    /// C: `BACK_RING_ATTACH(r, s, s->rsp_prod, size)`; OCaml: `Ring.Rpc.Back.init` (on `of_buf_no_init`)
    public init(attaching memory: PageBuffer, geometry: SharedRingGeometry) throws(SharedRingError) {
        guard memory.count >= geometry.byteCount else {
            throw .badGeometry("ring memory is \(memory.count) bytes, geometry needs \(geometry.byteCount)")
        }
        self.geometry = geometry
        self.memory = memory
        self.header = SharedRingHeader(memory: memory)
        let start = header.load(SharedRingGeometry.responseProducerOffset)
        self.requestConsumer = start
        self.responseProducer = start
    }

    /// Entries in the ring.
    public var size: UInt32 { geometry.size }

    /// Number of requests published and not yet consumed that we can also answer. Reads `req_prod` once;
    /// throws when the front claims more requests than the ring holds.
    ///
    /// C: `RING_HAS_UNCONSUMED_REQUESTS` with `RING_REQUEST_PROD_OVERFLOW`
    public func unconsumedRequests() throws(SharedRingError) -> UInt32 {
        let producer = header.load(SharedRingGeometry.requestProducerOffset)
        guard producer &- responseProducer <= geometry.size else {
            throw .peerRequestOverflow(requestProducer: producer, responseProducer: responseProducer, size: size)
        }
        let published = producer &- requestConsumer
        let room = geometry.size &- (requestConsumer &- responseProducer)
        return min(published, room)
    }

    /// The slot of the next request; call only after ``unconsumedRequests()`` said one is there. The caller
    /// copies the request out of the slot once and decodes the copy.
    ///
    /// C: `RING_GET_REQUEST(r, r->req_cons++)` (after `RING_COPY_REQUEST`'s rule)
    public mutating func nextRequestSlot() -> PageBuffer {
        precondition(requestConsumer &- responseProducer < geometry.size, "request consumer overflow")
        let slot = memory.slice(from: geometry.entryOffset(requestConsumer), count: geometry.entrySize)
        requestConsumer &+= 1
        return slot
    }

    /// The slot for the next response; one exists for every request consumed and not yet answered.
    ///
    /// C: `RING_GET_RESPONSE(r, r->rsp_prod_pvt++)`
    public mutating func nextResponseSlot() -> PageBuffer? {
        guard responseProducer != requestConsumer else { return nil }
        let slot = memory.slice(from: geometry.entryOffset(responseProducer), count: geometry.entrySize)
        responseProducer &+= 1
        return slot
    }

    /// Requests consumed and not yet answered.
    public var pendingResponses: UInt32 { requestConsumer &- responseProducer }

    /// Publishes produced responses; true when the front asked to be notified.
    ///
    /// C: `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`
    public mutating func pushResponses() -> Bool {
        let new = responseProducer
        let old = header.load(SharedRingGeometry.responseProducerOffset)
        header.store(new, SharedRingGeometry.responseProducerOffset)
        header.fullBarrier()
        let event = header.load(SharedRingGeometry.responseEventOffset)
        return (new &- event) < (new &- old)
    }

    /// Sets `req_event = req_cons + 1` so the front notifies on its next request, then reports whether one
    /// arrived in between.
    ///
    /// C: `RING_FINAL_CHECK_FOR_REQUESTS`
    public mutating func finalCheckForRequests() throws(SharedRingError) -> Bool {
        if try unconsumedRequests() > 0 { return true }
        header.store(requestConsumer &+ 1, SharedRingGeometry.requestEventOffset)
        header.fullBarrier()
        return try unconsumedRequests() > 0
    }
}
