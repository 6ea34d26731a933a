public import XenCore

/// Picks a queue for a frame so that one flow (same addresses and ports) always takes the same queue and
/// stays in order, as Linux's `skb_get_hash` does for xen-netfront and xen-netback.
///
/// OCaml: none (mirage-net-xen has one queue)
public enum FlowHash {
    /// FNV-1a over the MAC addresses, and, for IP frames, the IP addresses and (TCP/UDP) ports.
    public static func hash(_ frame: PageBuffer) -> UInt32 {
        var hash: UInt32 = 0x811C_9DC5
        func mix(_ offset: Int, _ count: Int) {
            guard offset >= 0, count > 0, offset + count <= frame.count else { return }
            for index in offset..<(offset + count) { hash = (hash ^ UInt32(frame.uint8(at: index))) &* 0x0100_0193 }
        }
        mix(0, 12)
        guard frame.count >= 14 else { return hash }
        switch frame.uint16(at: 12).byteSwapped {
        case 0x0800:
            mix(14 + 12, 8)
            let headerLength = Int(frame.count > 14 ? frame.uint8(at: 14) & 0x0F : 0) * 4
            let proto = frame.count > 23 ? frame.uint8(at: 23) : 0
            if proto == 6 || proto == 17 { mix(14 + headerLength, 4) }
        case 0x86DD:
            mix(14 + 8, 32)
            let next = frame.count > 20 ? frame.uint8(at: 20) : 0
            if next == 6 || next == 17 { mix(14 + 40, 4) }
        default:
            break
        }
        return hash
    }

    /// The queue of `frame` among `count`.
    public static func queue(for frame: PageBuffer, count: Int) -> Int {
        count <= 1 ? 0 : Int(hash(frame) % UInt32(count))
    }
}
