public import XenCore

/// A blkif ring request, in any of its three layouts (x86_64 ABI).
///
/// Encoding writes into a ring slot; decoding copies the slot once into private memory first, so a
/// frontend that rewrites the slot while the backend reads it cannot make two reads disagree (XSA-155).
///
/// OCaml: `Blkproto.Req.t` (mirage-block-xen has no discard request)
public enum BlkifRequest: Sendable, Equatable {
    /// READ, WRITE, WRITE_BARRIER or FLUSH_DISKCACHE with up to 11 segments (`struct blkif_request`).
    case direct(BlkifDirectRequest)
    /// An indirect request (`struct blkif_request_indirect`).
    case indirect(BlkifIndirectRequest)
    /// A discard (`struct blkif_request_discard`).
    case discard(BlkifDiscardRequest)

    /// The request id the response echoes.
    public var id: UInt64 {
        switch self {
        case .direct(let request): request.id
        case .indirect(let request): request.id
        case .discard(let request): request.id
        }
    }

    /// Writes this request into a ring slot (at least ``Blkif/requestSize`` bytes). Unused bytes are zeroed.
    ///
    /// OCaml: `Blkproto.Req.Proto_64.write_request`
    public func encode(into slot: PageBuffer) {
        switch self {
        case .direct(let request): request.encode(into: slot)
        case .indirect(let request): request.encode(into: slot)
        case .discard(let request): request.encode(into: slot)
        }
    }

    /// Copies a ring slot once and decodes the copy. Segment counts and ranges are validated; indirect
    /// segment counts are checked against `maxIndirectSegments`.
    ///
    /// OCaml: `Blkproto.Req.Proto_64.read_request`
    public static func decode(
        copying slot: PageBuffer, maxIndirectSegments: Int = Blkif.maxIndirectSegments
    ) throws(BlkifDecodeError) -> BlkifRequest {
        guard slot.count >= Blkif.requestSize else { throw .truncated(slot.count) }
        return try withUnsafeTemporaryAllocation(byteCount: Blkif.requestSize, alignment: 8) {
            (copy) throws(BlkifDecodeError) -> BlkifRequest in
            let raw = UnsafeMutableRawPointer(copy.baseAddress!)
            raw.copyMemory(from: slot.pointer, byteCount: Blkif.requestSize)
            return try decode(raw: UnsafeRawPointer(raw), maxIndirectSegments: maxIndirectSegments)
        }
    }

    private static func decode(raw: UnsafeRawPointer, maxIndirectSegments: Int) throws(BlkifDecodeError)
        -> BlkifRequest
    {
        func u8(_ at: Int) -> UInt8 { raw.load(fromByteOffset: at, as: UInt8.self) }
        func u16(_ at: Int) -> UInt16 { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self)) }
        func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)) }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }

        let id = u64(8)
        guard let operation = BlkifOperation(rawValue: u8(0)), operation != .reserved1 else {
            throw .unknownOperation(u8(0), id: id)
        }
        switch operation {
        case .read, .write, .writeBarrier, .flushDiskCache:
            let count = Int(u8(1))
            // FLUSH may carry no segments; READ/WRITE need at least one (Linux blkback's rule).
            let minimum = operation == .flushDiskCache || operation == .writeBarrier ? 0 : 1
            guard count >= minimum, count <= Blkif.maxDirectSegments else {
                throw .badSegmentCount(count, id: id)
            }
            var segments: [BlkifSegment] = []
            segments.reserveCapacity(count)
            for index in 0..<count {
                let segment = BlkifSegment.decode(raw, at: 24 + index * Blkif.segmentSize)
                guard segment.isValid else {
                    throw .badSegment(
                        index: index, first: segment.firstSector, last: segment.lastSector, id: id)
                }
                segments.append(segment)
            }
            return .direct(
                BlkifDirectRequest(
                    operation: operation, handle: u16(2), id: id, sector: u64(16), segments: segments))
        case .discard:
            return .discard(
                BlkifDiscardRequest(
                    secure: u8(1) & Blkif.discardSecure != 0, handle: u16(2), id: id, sector: u64(16),
                    sectorCount: u64(24)))
        case .indirect:
            let inner = u8(1)
            guard let innerOperation = BlkifOperation(rawValue: inner),
                innerOperation == .read || innerOperation == .write
            else { throw .unknownOperation(inner, id: id) }
            let count = Int(u16(2))
            guard count >= 1, count <= min(maxIndirectSegments, Blkif.maxIndirectSegments) else {
                throw .badSegmentCount(count, id: id)
            }
            let pages = (count + Blkif.segmentsPerIndirectPage - 1) / Blkif.segmentsPerIndirectPage
            let grants = (0..<pages).map { GrantRef(u32(28 + $0 * 4)) }
            return .indirect(
                BlkifIndirectRequest(
                    operation: innerOperation, segmentCount: count, handle: u16(24), id: id, sector: u64(16),
                    indirectGrants: grants))
        case .reserved1:
            throw .unknownOperation(u8(0), id: id)
        }
    }
}

// MARK: - The three layouts

/// `struct blkif_request`: op u8 @0, nr_segments u8 @1, handle u16 @2, id u64 @8, sector_number u64 @16,
/// seg[11] @24 (112 bytes).
///
/// OCaml: `Blkproto.Req.t` with `Direct` segments
public struct BlkifDirectRequest: Sendable, Equatable {
    /// READ, WRITE, WRITE_BARRIER or FLUSH_DISKCACHE.
    public var operation: BlkifOperation
    /// The device handle (the vbd's id).
    public var handle: UInt16
    /// Echoed in the response.
    public var id: UInt64
    /// First 512-byte unit on the disk.
    public var sector: UInt64
    /// Up to 11 pages.
    public var segments: [BlkifSegment]

    /// A direct request.
    public init(operation: BlkifOperation, handle: UInt16, id: UInt64, sector: UInt64, segments: [BlkifSegment]) {
        self.operation = operation
        self.handle = handle
        self.id = id
        self.sector = sector
        self.segments = segments
    }

    func encode(into slot: PageBuffer) {
        precondition(segments.count <= Blkif.maxDirectSegments, "too many direct segments")
        slot.slice(from: 0, count: Blkif.requestSize).fill(0)
        slot.setUInt8(operation.rawValue, at: 0)
        slot.setUInt8(UInt8(segments.count), at: 1)
        slot.setUInt16(handle, at: 2)
        slot.setUInt64(id, at: 8)
        slot.setUInt64(sector, at: 16)
        for (index, segment) in segments.enumerated() {
            segment.encode(into: slot, at: 24 + index * Blkif.segmentSize)
        }
    }
}

/// `struct blkif_request_indirect`: op=6 u8 @0, indirect_op u8 @1, nr_segments u16 @2, id u64 @8,
/// sector_number u64 @16, handle u16 @24, indirect_grefs[8] u32 @28 (64 bytes).
///
/// OCaml: `Blkproto.Req.t` with `Indirect` grants (one page only there)
public struct BlkifIndirectRequest: Sendable, Equatable {
    /// READ or WRITE.
    public var operation: BlkifOperation
    /// Segments described by the indirect pages.
    public var segmentCount: Int
    /// The device handle.
    public var handle: UInt16
    /// Echoed in the response.
    public var id: UInt64
    /// First 512-byte unit on the disk.
    public var sector: UInt64
    /// The pages holding the segment descriptors, ceil(segmentCount / 512) of them.
    public var indirectGrants: [GrantRef]

    /// An indirect request.
    public init(
        operation: BlkifOperation, segmentCount: Int, handle: UInt16, id: UInt64, sector: UInt64,
        indirectGrants: [GrantRef]
    ) {
        self.operation = operation
        self.segmentCount = segmentCount
        self.handle = handle
        self.id = id
        self.sector = sector
        self.indirectGrants = indirectGrants
    }

    func encode(into slot: PageBuffer) {
        precondition(indirectGrants.count <= Blkif.maxIndirectPages, "too many indirect pages")
        slot.slice(from: 0, count: Blkif.requestSize).fill(0)
        slot.setUInt8(BlkifOperation.indirect.rawValue, at: 0)
        slot.setUInt8(operation.rawValue, at: 1)
        slot.setUInt16(UInt16(segmentCount), at: 2)
        slot.setUInt64(id, at: 8)
        slot.setUInt64(sector, at: 16)
        slot.setUInt16(handle, at: 24)
        for (index, grant) in indirectGrants.enumerated() { slot.setUInt32(grant.rawValue, at: 28 + index * 4) }
    }
}

/// `struct blkif_request_discard`: op=5 u8 @0, flag u8 @1, handle u16 @2, id u64 @8, sector_number u64 @16,
/// nr_sectors u64 @24 (32 bytes).
///
/// OCaml: none (not in mirage-block-xen: no discard); Linux `struct blkif_request_discard`
public struct BlkifDiscardRequest: Sendable, Equatable {
    /// `BLKIF_DISCARD_SECURE`.
    public var secure: Bool
    /// The device handle.
    public var handle: UInt16
    /// Echoed in the response.
    public var id: UInt64
    /// First 512-byte unit discarded.
    public var sector: UInt64
    /// 512-byte units discarded.
    public var sectorCount: UInt64

    /// A discard request.
    public init(secure: Bool = false, handle: UInt16, id: UInt64, sector: UInt64, sectorCount: UInt64) {
        self.secure = secure
        self.handle = handle
        self.id = id
        self.sector = sector
        self.sectorCount = sectorCount
    }

    func encode(into slot: PageBuffer) {
        slot.slice(from: 0, count: Blkif.requestSize).fill(0)
        slot.setUInt8(BlkifOperation.discard.rawValue, at: 0)
        slot.setUInt8(secure ? Blkif.discardSecure : 0, at: 1)
        slot.setUInt16(handle, at: 2)
        slot.setUInt64(id, at: 8)
        slot.setUInt64(sector, at: 16)
        slot.setUInt64(sectorCount, at: 24)
    }
}
