import BlkifProtocol
import CXen
import Testing
import XenCore

/// The codecs against blkif.h: sizes and offsets through CXen, golden bytes, and C structs reading what Swift
/// wrote.
@Suite struct BlkifProtocolTests {
    @Test func layoutsMatchBlkifH() {
        #expect(MemoryLayout<blkif_request>.size == Blkif.requestSize)
        #expect(MemoryLayout<blkif_request_indirect>.size == Blkif.indirectRequestSize)
        #expect(MemoryLayout<blkif_request_discard>.size == Blkif.discardRequestSize)
        #expect(MemoryLayout<blkif_response>.size == Blkif.responseSize)
        #expect(MemoryLayout<blkif_request_segment>.size == Blkif.segmentSize)
        #expect(cxen_blkif_request_id_offset() == 8)
        #expect(cxen_blkif_request_sector_offset() == 16)
        #expect(cxen_blkif_request_seg_offset() == 24)
        #expect(cxen_blkif_request_indirect_id_offset() == 8)
        #expect(cxen_blkif_request_indirect_sector_offset() == 16)
        #expect(cxen_blkif_request_indirect_handle_offset() == 24)
        #expect(cxen_blkif_request_indirect_grefs_offset() == 28)
        #expect(cxen_blkif_request_discard_nr_sectors_offset() == 24)
        #expect(cxen_blkif_response_status_offset() == 10)
        #expect(BLKIF_MAX_SEGMENTS_PER_REQUEST == Blkif.maxDirectSegments)
        #expect(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST == Blkif.maxIndirectPages)
        #expect(BLKIF_OP_INDIRECT == BlkifOperation.indirect.rawValue)
        #expect(BLKIF_OP_DISCARD == BlkifOperation.discard.rawValue)
        #expect(BLKIF_OP_FLUSH_DISKCACHE == BlkifOperation.flushDiskCache.rawValue)
        #expect(BLKIF_OP_WRITE_BARRIER == BlkifOperation.writeBarrier.rawValue)
        #expect(BLKIF_RSP_EOPNOTSUPP == BlkifStatus.notSupported.rawValue)
        #expect(BLKIF_RSP_ERROR == BlkifStatus.error.rawValue)
        #expect(VDISK_READONLY == Blkif.infoReadOnly)
    }

    @Test func directRequestGoldenBytesAndCView() throws {
        let request = BlkifRequest.direct(
            BlkifDirectRequest(
                operation: .write, handle: 51712, id: 0x0102_0304_0506_0708, sector: 0x1122_3344,
                segments: [
                    BlkifSegment(grant: 9, firstSector: 0, lastSector: 7),
                    BlkifSegment(grant: 0xDEAD_BEEF, firstSector: 2, lastSector: 3),
                ]))
        let slot = PageBuffer(pages: 1).slice(from: 64, count: 112)
        slot.fill(0xAA)
        request.encode(into: slot)
        let bytes = slot.bytes
        #expect(
            Array(bytes[0..<24]) == [
                1, 2, 0x00, 0xCA, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1, 0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0,
            ])
        #expect(Array(bytes[24..<40]) == [9, 0, 0, 0, 0, 7, 0, 0, 0xEF, 0xBE, 0xAD, 0xDE, 2, 3, 0, 0])
        #expect(bytes[40...].allSatisfy { $0 == 0 })
        let c = slot.pointer.load(as: blkif_request.self)
        #expect(c.operation == 1 && c.nr_segments == 2 && c.handle == 51712)
        #expect(c.id == 0x0102_0304_0506_0708 && c.sector_number == 0x1122_3344)
        #expect(c.seg.1.gref == 0xDEAD_BEEF && c.seg.1.first_sect == 2 && c.seg.1.last_sect == 3)
        #expect(try BlkifRequest.decode(copying: slot) == request)
    }

    @Test func indirectRequestMatchesCStruct() throws {
        let request = BlkifRequest.indirect(
            BlkifIndirectRequest(
                operation: .read, segmentCount: 1300, handle: 768, id: 42, sector: 1 << 40,
                indirectGrants: [100, 101, 102]))
        let slot = PageBuffer(pages: 1).slice(from: 0, count: 112)
        request.encode(into: slot)
        let c = slot.pointer.load(as: blkif_request_indirect.self)
        #expect(c.operation == 6 && c.indirect_op == 0 && c.nr_segments == 1300)
        #expect(c.id == 42 && c.sector_number == 1 << 40 && c.handle == 768)
        #expect(c.indirect_grefs.0 == 100 && c.indirect_grefs.2 == 102 && c.indirect_grefs.3 == 0)
        #expect(try BlkifRequest.decode(copying: slot) == request)
        // A backend advertising 256 segments refuses 1300.
        #expect(throws: BlkifDecodeError.badSegmentCount(1300, id: 42)) {
            try BlkifRequest.decode(copying: slot, maxIndirectSegments: 256)
        }
    }

    @Test func discardRequestMatchesCStruct() throws {
        let request = BlkifRequest.discard(
            BlkifDiscardRequest(secure: true, handle: 5, id: 7, sector: 4096, sectorCount: 1 << 33))
        let slot = PageBuffer(pages: 1).slice(from: 0, count: 112)
        request.encode(into: slot)
        let c = slot.pointer.load(as: blkif_request_discard.self)
        #expect(c.operation == 5 && c.flag == 1 && c.handle == 5 && c.id == 7)
        #expect(c.sector_number == 4096 && c.nr_sectors == 1 << 33)
        #expect(try BlkifRequest.decode(copying: slot) == request)
    }

    @Test func responseRoundTripAndCView() throws {
        let slot = PageBuffer(pages: 1).slice(from: 0, count: 112)
        let response = BlkifResponse(id: 0xFFFF_FFFF_0000_0001, operation: 3, status: .notSupported)
        response.encode(into: slot)
        #expect(Array(slot.bytes[0..<16]) == [1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 3, 0, 0xFE, 0xFF, 0, 0, 0, 0])
        let c = slot.pointer.load(as: blkif_response.self)
        #expect(c.id == response.id && c.operation == 3 && c.status == -2)
        #expect(try BlkifResponse.decode(from: slot) == response)
        slot.setUInt16(UInt16(bitPattern: -7), at: 10)
        #expect(throws: BlkifDecodeError.unknownStatus(-7, id: response.id)) { try BlkifResponse.decode(from: slot) }
    }

    // MARK: - One test per decode error

    private func slot(_ fill: (PageBuffer) -> Void) -> PageBuffer {
        let slot = PageBuffer(pages: 1).slice(from: 0, count: 112)
        fill(slot)
        return slot
    }

    @Test func unknownOperationIsRejected() {
        for op: UInt8 in [4, 7, 0xFF] {
            let bad = slot { $0.setUInt8(op, at: 0) }
            #expect(throws: BlkifDecodeError.unknownOperation(op, id: 0)) { try BlkifRequest.decode(copying: bad) }
        }
        let badInner = slot {
            $0.setUInt8(6, at: 0)
            $0.setUInt8(3, at: 1)
            $0.setUInt16(1, at: 2)
        }
        #expect(throws: BlkifDecodeError.unknownOperation(3, id: 0)) { try BlkifRequest.decode(copying: badInner) }
    }

    @Test func segmentCountsAreChecked() {
        for count: UInt8 in [0, 12, 255] {
            let bad = slot {
                $0.setUInt8(0, at: 0)
                $0.setUInt8(count, at: 1)
            }
            #expect(throws: BlkifDecodeError.badSegmentCount(Int(count), id: 0)) {
                try BlkifRequest.decode(copying: bad)
            }
        }
        let flush = slot { $0.setUInt8(3, at: 0) }
        #expect((try? BlkifRequest.decode(copying: flush)) != nil)
        let indirect = slot {
            $0.setUInt8(6, at: 0)
            $0.setUInt16(4097, at: 2)
        }
        #expect(throws: BlkifDecodeError.badSegmentCount(4097, id: 0)) { try BlkifRequest.decode(copying: indirect) }
    }

    @Test func segmentRangesAreChecked() {
        for (first, last): (UInt8, UInt8) in [(3, 2), (0, 8), (8, 8), (255, 255)] {
            let bad = slot {
                $0.setUInt8(1, at: 0)
                $0.setUInt8(1, at: 1)
                $0.setUInt8(first, at: 28)
                $0.setUInt8(last, at: 29)
            }
            #expect(throws: BlkifDecodeError.badSegment(index: 0, first: first, last: last, id: 0)) {
                try BlkifRequest.decode(copying: bad)
            }
        }
    }

    @Test func truncatedSlotsAreRejected() {
        let short = PageBuffer(pages: 1).slice(from: 0, count: 100)
        #expect(throws: BlkifDecodeError.truncated(100)) { try BlkifRequest.decode(copying: short) }
        #expect(throws: BlkifDecodeError.truncated(8)) {
            try BlkifResponse.decode(from: short.slice(from: 0, count: 8))
        }
    }

    @Test func indirectPagesDecodeOnce() {
        let page = PageBuffer(pages: 1)
        for index in 0..<512 {
            BlkifSegment(grant: GrantRef(UInt32(index)), firstSector: 1, lastSector: 6).encode(
                into: page, at: index * 8)
        }
        let segments = BlkifSegment.decodeIndirect(from: page, count: 512)
        #expect(segments?.count == 512 && segments?[511].grant == 511 && segments?[3].sectorCount == 6)
        #expect(BlkifSegment.decodeIndirect(from: page, count: 513) == nil)
        #expect(BlkifSegment.decodeIndirect(from: page.slice(from: 0, count: 16), count: 3) == nil)
    }
}
