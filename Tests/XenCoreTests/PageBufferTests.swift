import Testing
import XenCore

@Suite struct PageBufferTests {
    @Test func allocationIsPageAlignedAndZeroed() {
        let buffer = PageBuffer(pages: 3)
        #expect(buffer.isPageAligned)
        #expect(buffer.count == 3 * xenPageSize)
        #expect(buffer.bytes.allSatisfy { $0 == 0 })
        #expect(buffer.pages.count == 3)
    }

    @Test func byteCountGetsWholeZeroedPagesAndAViewOfExactlyThatMany() {
        let odd = PageBuffer(byteCount: 5000)
        #expect(odd.count == 5000 && odd.storage.byteCount == 8192 && odd.isPageAligned)
        #expect(odd.bytes.allSatisfy { $0 == 0 })
        let empty = PageBuffer(byteCount: 0)
        #expect(empty.count == 0 && empty.storage.byteCount == 4096)
        #expect(PageBuffer(copying: [1, 2, 3]).storage.byteCount == 4096)
    }

    @Test func slicesShareMemory() {
        let buffer = PageBuffer(pages: 1)
        let slice = buffer.slice(from: 100, count: 8)
        slice.setUInt64(0x0102_0304_0506_0708, at: 0)
        #expect(buffer.uint8(at: 100) == 0x08)
        #expect(buffer.uint8(at: 107) == 0x01)
        #expect(buffer.uint32(at: 100) == 0x0506_0708)
        #expect(buffer.uint16(at: 106) == 0x0102)
    }

    @Test func checkedSliceRejectsOutOfRange() {
        let buffer = PageBuffer(pages: 1)
        #expect(buffer.checkedSlice(from: 4000, count: 200) == nil)
        #expect(buffer.checkedSlice(from: -1, count: 1) == nil)
        #expect(buffer.checkedSlice(from: Int.max, count: Int.max) == nil)
        #expect(buffer.checkedSlice(from: 4096, count: 0)?.count == 0)
    }

    @Test func copyingInitAndEquality() {
        let a = PageBuffer(copying: [1, 2, 3])
        let b = PageBuffer(copying: [1, 2, 3])
        #expect(a.count == 3)
        #expect(a.contentsEqual(b))
        b.setUInt8(9, at: 2)
        #expect(!a.contentsEqual(b))
    }

    @Test func identifiersParseXenstoreText() {
        #expect(GrantRef("4294967295")?.rawValue == UInt32.max)
        #expect(GrantRef("-1") == nil)
        #expect(EventChannelPort("17")?.rawValue == 17)
        #expect(XenbusState(xenstoreValue: "4") == .connected)
        #expect(XenbusState(xenstoreValue: "9") == nil)
    }
}
