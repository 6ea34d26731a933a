import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A debugging probe (XT_CANARY=1): a thread that keeps mapping fresh anonymous memory, fills it with a
/// pattern naming each word's address, and checks it again later. Nothing but this thread writes there, so
/// any word that changes was changed from outside our code (the kernel, the hypervisor, a stale mapping):
/// it prints `XT-CANARY` lines with the address and what the memory holds instead.
enum HeapCanary {
    static func start() {
        _ = DetachedThread.spawn { run() }
    }

    private static let regionBytes = 256 * 4096
    private static let kept = 32

    private static func run() {
        var regions: [UnsafeMutableRawPointer] = []
        var round: UInt64 = 0
        while true {
            round += 1
            guard
                let raw = mmap(nil, regionBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                raw != UnsafeMutableRawPointer(bitPattern: -1)
            else {
                usleep(100_000)
                continue
            }
            fill(raw)
            regions.append(raw)
            for region in regions { check(region, round: round) }
            if regions.count > kept {
                let old = regions.removeFirst()
                check(old, round: round)
                munmap(old, regionBytes)
            }
            usleep(20_000)
        }
    }

    private static func pattern(_ address: UnsafeMutableRawPointer, _ offset: Int) -> UInt64 {
        0xCA5A_0000_0000_0000 ^ UInt64(UInt(bitPattern: address + offset))
    }

    private static func fill(_ region: UnsafeMutableRawPointer) {
        for offset in stride(from: 0, to: regionBytes, by: 8) {
            region.storeBytes(of: pattern(region, offset), toByteOffset: offset, as: UInt64.self)
        }
    }

    private static func check(_ region: UnsafeMutableRawPointer, round: UInt64) {
        var reported = 0
        for offset in stride(from: 0, to: regionBytes, by: 8) {
            let found = region.load(fromByteOffset: offset, as: UInt64.self)
            let want = pattern(region, offset)
            guard found != want else { continue }
            if reported < 4 {
                let page = (offset / 4096) * 4096
                var words: [String] = []
                for word in 0..<8 {
                    let value = region.load(fromByteOffset: page + word * 8, as: UInt64.self)
                    words.append(String(value, radix: 16))
                }
                let line =
                    "XT-CANARY round \(round) at \(region + offset) (page \(region + page)): want "
                    + "\(String(want, radix: 16)) found \(String(found, radix: 16)); page starts \(words)\n"
                _ = line.withCString { write(2, $0, strlen($0)) }
            }
            reported += 1
            // Repair so that one event is reported once.
            region.storeBytes(of: want, toByteOffset: offset, as: UInt64.self)
        }
        if reported > 4 {
            let line = "XT-CANARY round \(round): \(reported) words changed in region \(region)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
        }
    }
}
