import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A guard over dom0's own memory, running for the whole run: a thread keeps mapping fresh anonymous memory,
/// fills it with a pattern naming each word's address, and checks it again later. Nothing but this thread
/// writes there, so any word that changes was changed from outside the process's code (the kernel, the
/// hypervisor, a stale translation): it prints `XT-CANARY` lines with the address and what the memory holds
/// instead, and the run's last check fails. This is how the domU group's heap corruption was pinned on the
/// platform (see Documentation/RealXen.md): the canary's pages took other pages' contents and Xen's list
/// poison values within seconds of `xl create` on a two-vCPU dom0, with none of our code touching the guest.
enum HeapCanary {
    private static let changed = Atomic<Int>(0)
    private static let rounds = Atomic<Int>(0)

    /// Starts the thread (`regionBytes` per region, `kept` regions alive, one round every `interval` µs).
    static func start(regionBytes: Int = 256 * 4096, kept: Int = 16, interval: UInt32 = 50_000) {
        _ = DetachedThread.spawn { run(regionBytes: regionBytes, kept: kept, interval: interval) }
    }

    /// Words found changed so far, and rounds done.
    static var findings: (changedWords: Int, rounds: Int) {
        (changed.load(ordering: .relaxed), rounds.load(ordering: .relaxed))
    }

    private static func run(regionBytes: Int, kept: Int, interval: UInt32) {
        var regions: [UnsafeMutableRawPointer] = []
        var round = 0
        while true {
            round += 1
            rounds.store(round, ordering: .relaxed)
            guard
                let raw = mmap(nil, regionBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                raw != UnsafeMutableRawPointer(bitPattern: -1)
            else {
                usleep(interval)
                continue
            }
            fill(raw, regionBytes)
            regions.append(raw)
            for region in regions { check(region, regionBytes, round: round) }
            if regions.count > kept { munmap(regions.removeFirst(), regionBytes) }
            usleep(interval)
        }
    }

    private static func pattern(_ address: UnsafeMutableRawPointer, _ offset: Int) -> UInt64 {
        0xCA5A_0000_0000_0000 ^ UInt64(UInt(bitPattern: address + offset))
    }

    private static func fill(_ region: UnsafeMutableRawPointer, _ bytes: Int) {
        for offset in stride(from: 0, to: bytes, by: 8) {
            region.storeBytes(of: pattern(region, offset), toByteOffset: offset, as: UInt64.self)
        }
    }

    private static func check(_ region: UnsafeMutableRawPointer, _ bytes: Int, round: Int) {
        var reported = 0
        for offset in stride(from: 0, to: bytes, by: 8) {
            let found = region.load(fromByteOffset: offset, as: UInt64.self)
            let want = pattern(region, offset)
            guard found != want else { continue }
            if reported == 0 {
                let page = (offset / 4096) * 4096
                let words = (0..<8).map {
                    String(region.load(fromByteOffset: page + $0 * 8, as: UInt64.self), radix: 16)
                }
                log(
                    "XT-CANARY round \(round) at \(region + offset): want \(String(want, radix: 16)) found "
                        + "\(String(found, radix: 16)); its page starts \(words)")
            }
            reported += 1
            // Repair, so that one event is counted once.
            region.storeBytes(of: want, toByteOffset: offset, as: UInt64.self)
        }
        if reported > 0 {
            changed.wrappingAdd(reported, ordering: .relaxed)
            log("XT-CANARY round \(round): \(reported) words changed in region \(region)")
        }
    }

    private static func log(_ line: String) {
        let text = line + "\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
    }
}
