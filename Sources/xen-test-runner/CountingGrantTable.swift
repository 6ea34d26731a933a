import GrantTable
import Synchronization
import XenCore

/// A grant table that counts the mappings made through it and not yet unmapped (the `hostile` group hands it
/// to the BlockBack serving the hostile guest: after every step the count must be back to zero), and the
/// mapping attempts the hypervisor refused.
final class CountingGrantTable: GrantTableBackend, Sendable {
    private let inner: any GrantTableBackend
    private let counts = Mutex<(live: Int, mapped: Int, refused: Int)>((0, 0, 0))

    init(_ inner: any GrantTableBackend) { self.inner = inner }

    /// Mappings alive now, mappings made in all, map calls refused.
    var snapshot: (live: Int, mapped: Int, refused: Int) { counts.withLock { $0 } }

    var domain: DomainID { inner.domain }
    var refs: GrantRefPool { inner.refs }

    func grantAccess(_ ref: GrantRef, to domain: DomainID, writable: Bool, page: PageBuffer) throws(GrantTableError) {
        try inner.grantAccess(ref, to: domain, writable: writable, page: page)
    }

    func endAccess(_ ref: GrantRef) throws(GrantTableError) { try inner.endAccess(ref) }

    func map(domain: DomainID, ref: GrantRef, writable: Bool) throws(GrantTableError) -> GrantMapping {
        try mapv(domain: domain, refs: [ref], writable: writable)
    }

    func mapv(domain: DomainID, refs: [GrantRef], writable: Bool) throws(GrantTableError) -> GrantMapping {
        let mapping: GrantMapping
        do { mapping = try inner.mapv(domain: domain, refs: refs, writable: writable) } catch {
            counts.withLock { $0.refused += 1 }
            throw error
        }
        counts.withLock {
            $0.live += 1
            $0.mapped += 1
        }
        let address = mapping.buffer.pointer
        let handle = GrantMappingHandle(mapping)
        // The outer mapping owns the address now: the inner one is unmapped when the outer's last view goes.
        return GrantMapping(address: address, domain: domain, refs: refs, writable: writable) {
            [self] () throws(GrantTableError) in
            defer { counts.withLock { $0.live -= 1 } }
            try handle.unmap()
        }
    }
}

/// The grant mappings of this process, as the kernel sees them.
enum Gntdev {
    /// Pages of this process mapped through `/dev/xen/gntdev` (from /proc/self/maps).
    static func mappedPages() -> Int {
        guard let maps = Files.read("/proc/self/maps") else { return -1 }
        var pages = 0
        for line in maps.split(separator: "\n") where line.hasSuffix("/dev/xen/gntdev") {
            let range = line.prefix { $0 != " " }.split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16) else {
                continue
            }
            pages += Int((end - start) / UInt(xenPageSize))
        }
        return pages
    }
}
