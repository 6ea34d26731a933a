import ConsoleBackend
import XenCore

/// One end of a PV console page (backend or guest) with a hostile other end, which writes the ring bytes, its
/// own indices and ours at will. Reads must return exactly the bytes the ring holds between our consumer and
/// the peer's producer; writes must land at our producer and publish it; impossible indices must be typed
/// errors (and the ring unusable), never out-of-bounds accesses.
///
/// Input: a side byte, the page's four indices, then actions.
enum ConsoleRingTarget {
    typealias L = ConsoleRingLayout

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let side: ConsoleRingSide = input.bool() ? .backend : .frontend
        let page = PageBuffer(pages: 1)
        for offset in [L.inConsOffset, L.inProdOffset, L.outConsOffset, L.outProdOffset] {
            page.setUInt32(UInt32(input.uint16()), at: offset)
        }
        guard var ring = try? ConsoleRing(page: page, side: side) else { return }
        // The ring we read and the one we write, as (data offset, size, producer offset, consumer offset).
        let input_ = (L.inOffset, L.inSize, L.inProdOffset, L.inConsOffset)
        let output = (L.outOffset, L.outSize, L.outProdOffset, L.outConsOffset)
        let (reads, writes) = side == .backend ? (output, input_) : (input_, output)
        while !input.isEmpty {
            switch input.byte() % 6 {
            case 0:  // the peer produces bytes on the ring we read
                let bytes = input.blob()
                let producer = page.uint32(at: reads.2)
                for (index, byte) in bytes.enumerated() {
                    page.setUInt8(byte, at: reads.0 + Int((producer &+ UInt32(index)) % UInt32(reads.1)))
                }
                page.setUInt32(producer &+ UInt32(bytes.count), at: reads.2)
            case 1:  // any index, any value
                let offsets = [L.inConsOffset, L.inProdOffset, L.outConsOffset, L.outProdOffset]
                page.setUInt32(input.uint32(), at: offsets[Int(input.byte() % 4)])
            case 2:  // the peer consumes what we wrote
                page.setUInt32(page.uint32(at: writes.2), at: writes.3)
            case 3:
                let maximum = Int(input.uint16() % 4096)
                let consumer = ring.consumer
                let producer = page.uint32(at: reads.2)
                var expected: [UInt8] = []
                let pending = producer &- consumer
                if pending <= UInt32(reads.1) {
                    for index in 0..<min(Int(pending), maximum) {
                        expected.append(page.uint8(at: reads.0 + Int((consumer &+ UInt32(index)) % UInt32(reads.1))))
                    }
                }
                guard let got = try? ring.read(maximum: maximum) else {
                    return require(pending > UInt32(reads.1), "read refused a consistent ring")
                }
                require(pending <= UInt32(reads.1), "read accepted producer \(producer) for consumer \(consumer)")
                require(got == expected, "read \(got.count) bytes, the ring holds \(expected.count) others")
                require(ring.consumer == consumer &+ UInt32(got.count), "consumer did not advance by what was read")
                if !got.isEmpty { require(page.uint32(at: reads.3) == ring.consumer, "consumer not published") }
            case 4:
                let bytes = input.blob()
                let producer = ring.producer
                let consumer = page.uint32(at: writes.3)
                let used = producer &- consumer
                guard let count = try? ring.write(bytes) else {
                    return require(used > UInt32(writes.1), "write refused a consistent ring")
                }
                require(used <= UInt32(writes.1), "write accepted consumer \(consumer) for producer \(producer)")
                require(count == min(bytes.count, writes.1 - Int(used)), "wrote \(count) of \(bytes.count)")
                for index in 0..<count {
                    let at = writes.0 + Int((producer &+ UInt32(index)) % UInt32(writes.1))
                    require(page.uint8(at: at) == bytes[index], "byte \(index) not in the ring")
                }
                if count > 0 {
                    require(page.uint32(at: writes.2) == producer &+ UInt32(count), "producer not published")
                }
            default:
                _ = try? ring.readableCount()
                _ = try? ring.writableCount()
                ring.connection = input.byte()
            }
        }
    }
}
