public import XenCore

/// One page of a request: a grant and the 512-byte units of it used (`struct blkif_request_segment`).
///
/// OCaml: `Blkproto.Req.seg`
public struct BlkifSegment: Sendable, Equatable, CustomStringConvertible {
    /// The granted page.
    public var grant: GrantRef
    /// First 512-byte unit in the page, 0...7.
    public var firstSector: UInt8
    /// Last 512-byte unit in the page, firstSector...7.
    public var lastSector: UInt8

    /// A segment covering units `firstSector...lastSector` of `grant`.
    public init(grant: GrantRef, firstSector: UInt8 = 0, lastSector: UInt8 = 7) {
        self.grant = grant
        self.firstSector = firstSector
        self.lastSector = lastSector
    }

    /// 512-byte units covered.
    public var sectorCount: Int { Int(lastSector) - Int(firstSector) + 1 }
    /// Byte offset in the page.
    public var byteOffset: Int { Int(firstSector) * Blkif.sectorUnit }
    /// Bytes covered.
    public var byteCount: Int { sectorCount * Blkif.sectorUnit }

    /// True when `first <= last <= 7`.
    public var isValid: Bool { firstSector <= lastSector && lastSector < Blkif.unitsPerPage }

    /// Writes the 8-byte descriptor at `offset` of `buffer`.
    ///
    /// OCaml: `Blkproto.Req.Proto_64.write_segment`
    public func encode(into buffer: PageBuffer, at offset: Int) {
        buffer.setUInt32(grant.rawValue, at: offset)
        buffer.setUInt8(firstSector, at: offset + 4)
        buffer.setUInt8(lastSector, at: offset + 5)
        buffer.setUInt16(0, at: offset + 6)
    }

    /// Reads the descriptor at `offset` of raw bytes (already copied out of shared memory).
    static func decode(_ raw: UnsafeRawPointer, at offset: Int) -> BlkifSegment {
        BlkifSegment(
            grant: GrantRef(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self))),
            firstSector: raw.load(fromByteOffset: offset + 4, as: UInt8.self),
            lastSector: raw.load(fromByteOffset: offset + 5, as: UInt8.self))
    }

    /// Copies `count` descriptors out of an indirect page once and decodes them; nil if the page is too small.
    /// The page belongs to the frontend, so it is read exactly once (no double fetch).
    ///
    /// OCaml: none (not in mirage-block-xen: it reads indirect descriptors in place); Linux `xen_blkbk_parse_indirect`
    public static func decodeIndirect(from page: PageBuffer, count: Int) -> [BlkifSegment]? {
        guard count >= 0, count <= Blkif.segmentsPerIndirectPage, count * Blkif.segmentSize <= page.count else {
            return nil
        }
        return withUnsafeTemporaryAllocation(byteCount: count * Blkif.segmentSize, alignment: 8) { copy in
            if count > 0 { copy.baseAddress!.copyMemory(from: page.pointer, byteCount: count * Blkif.segmentSize) }
            return (0..<count).map { decode(UnsafeRawPointer(copy.baseAddress!), at: $0 * Blkif.segmentSize) }
        }
    }

    public var description: String { "gref \(grant) [\(firstSector)...\(lastSector)]" }
}
