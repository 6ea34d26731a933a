import BlkifProtocol
import SharedRing
import XenCore

/// A blkif backend's side of a ring shared with a hostile frontend: the frontend writes request slots,
/// `req_prod` (any value), the event indices and even our `rsp_prod`; the backend drains as BlockBack's
/// queue does (count, copy each slot once, decode, final check), answers, and reads indirect descriptor
/// pages. The ring must stop with a typed error on impossible indices and never hand out more slots than
/// exist; every decoded request must be valid and survive re-encoding.
///
/// Input: a pages byte, then actions (a byte each, with their arguments).
enum BlkifBackTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        guard let (geometry, memory) = HostileRingPeer.ring(&input) else { return }
        memory.setUInt32(input.uint32(), at: 8)  // rsp_prod as the frontend left it
        guard var ring = try? BackRing(attaching: memory, geometry: geometry) else { return }
        var decoded: [BlkifRequest] = []
        while !input.isEmpty {
            switch input.byte() % 8 {
            case 0: HostileRingPeer.writeSlot(&input, memory, geometry, bytes: Blkif.requestSize)
            case 1: HostileRingPeer.setIndex(&input, memory, at: 0)  // req_prod, any value
            case 2: HostileRingPeer.advanceIndex(&input, memory, at: 0)
            case 3:
                let offset = [4, 8, 12][Int(input.byte() % 3)]
                HostileRingPeer.setIndex(&input, memory, at: offset)
            case 4, 5:
                guard drain(&ring, maxIndirect: input.int(in: 1...Blkif.maxIndirectSegments), into: &decoded) else {
                    return
                }
            case 6:
                answer(&ring, count: Int(input.byte()), decoded: &decoded)
            default:
                indirect(decoded.last, page: input.bytes(xenPageSize))
            }
            require(
                ring.pendingResponses <= ring.size,
                "\(ring.pendingResponses) requests pending on a ring of \(ring.size)")
        }
    }

    /// BlockBack's drain: false once the ring is broken.
    static func drain(_ ring: inout BackRing, maxIndirect: Int, into decoded: inout [BlkifRequest]) -> Bool {
        do {
            while true {
                var available = try ring.unconsumedRequests()
                require(available <= ring.size - ring.pendingResponses, "\(available) requests claimed, no room")
                while available > 0 {
                    let slot = ring.nextRequestSlot()
                    if let request = try? BlkifRequest.decode(copying: slot, maxIndirectSegments: maxIndirect) {
                        check(request, maxIndirect: maxIndirect)
                        decoded.append(request)
                    }
                    available -= 1
                }
                if try !ring.finalCheckForRequests() { return true }
            }
        } catch {
            return false
        }
    }

    static func check(_ request: BlkifRequest, maxIndirect: Int) {
        switch request {
        case .direct(let direct):
            require(direct.segments.count <= Blkif.maxDirectSegments, "\(direct.segments.count) direct segments")
            require(direct.segments.allSatisfy(\.isValid), "invalid segment decoded")
        case .indirect(let indirect):
            require((1...maxIndirect).contains(indirect.segmentCount), "\(indirect.segmentCount) indirect segments")
            require(
                indirect.indirectGrants.count * Blkif.segmentsPerIndirectPage >= indirect.segmentCount,
                "too few indirect pages")
        case .discard: break
        }
        let scratch = PageBuffer(pages: 1)
        request.encode(into: scratch)
        require(
            (try? BlkifRequest.decode(copying: scratch, maxIndirectSegments: maxIndirect)) == request,
            "request \(request) does not survive re-encoding")
    }

    static func answer(_ ring: inout BackRing, count: Int, decoded: inout [BlkifRequest]) {
        var answered = 0
        while answered < count, let slot = ring.nextResponseSlot() {
            let id = decoded.isEmpty ? 0 : decoded.removeFirst().id
            let response = BlkifResponse(id: id, operation: 0, status: .okay)
            response.encode(into: slot)
            require((try? BlkifResponse.decode(from: slot)) == response, "response does not survive its slot")
            answered += 1
        }
        _ = ring.pushResponses()
        require(ring.memory.uint32(at: 8) == ring.responseProducer, "rsp_prod not published")
    }

    /// Indirect descriptor pages belong to the frontend: read once, every segment validated.
    static func indirect(_ request: BlkifRequest?, page bytes: [UInt8]) {
        guard case .indirect(let indirect)? = request else { return }
        let page = PageBuffer(pages: 1)
        for (index, byte) in bytes.enumerated() { page.setUInt8(byte, at: index) }
        let count = min(indirect.segmentCount, Blkif.segmentsPerIndirectPage)
        guard let segments = BlkifSegment.decodeIndirect(from: page, count: count) else {
            return require(false, "a whole page did not hold \(count) descriptors")
        }
        require(segments.count == count, "decoded \(segments.count) of \(count) descriptors")
    }
}

/// A blkif frontend's side of a ring shared with a hostile backend: we queue requests; the backend writes
/// response slots, `rsp_prod` (any value) and the event indices. Consuming must refuse a `rsp_prod` that
/// claims more responses than requests outstanding, and every response must be one we can match or reject
/// (BlockFront disconnects on an unknown id).
///
/// Input: a pages byte, then actions.
enum BlkifFrontTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        guard let (geometry, memory) = HostileRingPeer.ring(&input) else { return }
        guard var ring = try? FrontRing(initialising: memory, geometry: geometry) else { return }
        var outstanding: Set<UInt64> = []
        var nextID: UInt64 = 1
        while !input.isEmpty {
            switch input.byte() % 6 {
            case 0:  // we queue requests
                for _ in 0..<Int(input.byte() % 40) {
                    guard let slot = ring.nextRequestSlot() else { break }
                    let request = BlkifRequest.direct(
                        BlkifDirectRequest(
                            operation: .read, handle: 0, id: nextID, sector: nextID * 8,
                            segments: [BlkifSegment(grant: GrantRef(UInt32(truncatingIfNeeded: nextID)))]))
                    request.encode(into: slot)
                    outstanding.insert(nextID)
                    nextID += 1
                }
                _ = ring.pushRequests()
            case 1: HostileRingPeer.writeSlot(&input, memory, geometry, bytes: Blkif.responseSize)
            case 2: HostileRingPeer.setIndex(&input, memory, at: 8)  // rsp_prod, any value
            case 3: HostileRingPeer.advanceIndex(&input, memory, at: 8)
            case 4:
                let offset = [0, 4, 12][Int(input.byte() % 3)]
                HostileRingPeer.setIndex(&input, memory, at: offset)
            default:
                var broken = false
                do {
                    _ = try ring.consumeResponses { slot in
                        guard !broken else { return }
                        guard let response = try? BlkifResponse.decode(from: slot),
                            outstanding.remove(response.id) != nil
                        else {
                            broken = true  // BlockFront: a typed error and a disconnect
                            return
                        }
                    }
                } catch {
                    return
                }
                if broken { return }
            }
            require(ring.outstanding <= ring.size, "\(ring.outstanding) outstanding on a ring of \(ring.size)")
            require(ring.freeRequests <= ring.size, "\(ring.freeRequests) free slots on a ring of \(ring.size)")
            require(Int(ring.outstanding) == outstanding.count, "ring and ids disagree on what is outstanding")
        }
    }
}

/// What the other end of a ring.h ring can do to the shared memory: rewrite any slot, set any of the four
/// header indices (req_prod 0, req_event 4, rsp_prod 8, rsp_event 12) or advance one.
enum HostileRingPeer {
    /// A blkif ring of the size the input chooses (one or two pages) and its memory.
    static func ring(_ input: inout FuzzInput) -> (SharedRingGeometry, PageBuffer)? {
        let pages = 1 << Int(input.byte() % 2)
        guard let geometry = try? SharedRingGeometry(entrySize: Blkif.ringEntrySize, pages: pages) else { return nil }
        return (geometry, PageBuffer(pages: pages))
    }

    /// Writes the first `bytes` bytes of a slot the input chooses.
    static func writeSlot(_ input: inout FuzzInput, _ memory: PageBuffer, _ geometry: SharedRingGeometry, bytes: Int) {
        let slot = Int(input.byte()) % Int(geometry.size)
        let offset = SharedRingGeometry.headerSize + slot * geometry.entrySize
        for (index, byte) in input.bytes(bytes).enumerated() { memory.setUInt8(byte, at: offset + index) }
    }

    static func setIndex(_ input: inout FuzzInput, _ memory: PageBuffer, at offset: Int) {
        memory.setUInt32(input.uint32(), at: offset)
    }

    /// Moves an index on by up to 39: more than a ring's worth of entries only with several steps.
    static func advanceIndex(_ input: inout FuzzInput, _ memory: PageBuffer, at offset: Int) {
        memory.setUInt32(memory.uint32(at: offset) &+ UInt32(input.byte() % 40), at: offset)
    }

    /// One of the indices at `offsets`, as the input chooses: moved on (``advanceIndex``) or set to any value.
    static func moveIndex(_ input: inout FuzzInput, _ memory: PageBuffer, among offsets: [Int]) {
        let offset = offsets[Int(input.byte()) % offsets.count]
        if input.bool() { advanceIndex(&input, memory, at: offset) } else { setIndex(&input, memory, at: offset) }
    }
}
