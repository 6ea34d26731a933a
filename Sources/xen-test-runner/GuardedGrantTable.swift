import GrantTable
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A debugging wrapper over a real grant table, on when `XT_GNT_GUARD=1`: every mapping gets a sequence id,
/// map and unmap are logged (`XT-GNT`), and each unmapped range is covered at once by an inaccessible
/// anonymous mapping so that malloc can never reuse it: a late access to released grant pages then faults
/// where it happens (with a backtrace) instead of corrupting whatever malloc put there.
final class GuardedGrantTable: GrantTableBackend, Sendable {
    private let inner: any GrantTableBackend
    private let label: String
    private static let sequence = Atomic<Int>(0)

    /// Whether `XT_GNT_GUARD=1` is set.
    static var enabled: Bool { getenv("XT_GNT_GUARD").map { String(cString: $0) == "1" } ?? false }

    /// Wraps `inner` when guarding is on; returns it unchanged otherwise.
    static func wrap(_ inner: any GrantTableBackend, label: String) -> any GrantTableBackend {
        enabled ? GuardedGrantTable(inner, label: label) : inner
    }

    private init(_ inner: any GrantTableBackend, label: String) {
        self.inner = inner
        self.label = label
    }

    var domain: DomainID { inner.domain }
    var refs: GrantRefPool { inner.refs }

    func grantAccess(_ ref: GrantRef, to domain: DomainID, writable: Bool, page: PageBuffer) throws(GrantTableError) {
        try inner.grantAccess(ref, to: domain, writable: writable, page: page)
    }

    func endAccess(_ ref: GrantRef) throws(GrantTableError) { try inner.endAccess(ref) }

    func map(domain: DomainID, ref: GrantRef, writable: Bool) throws(GrantTableError) -> GrantMapping {
        try guarded(inner.map(domain: domain, ref: ref, writable: writable))
    }

    func mapv(domain: DomainID, refs: [GrantRef], writable: Bool) throws(GrantTableError) -> GrantMapping {
        try guarded(inner.mapv(domain: domain, refs: refs, writable: writable))
    }

    private func guarded(_ mapping: consuming GrantMapping) -> GrantMapping {
        let id = Self.sequence.wrappingAdd(1, ordering: .relaxed).newValue
        let domain = mapping.domain
        let refs = mapping.refs
        let writable = mapping.writable
        let address = mapping.buffer.pointer
        let bytes = refs.count * xenPageSize
        let handle = GrantMappingHandle(mapping)
        let label = self.label
        Self.log("\(label) map #\(id) \(address) +\(bytes) refs \(refs.map(\.rawValue)) w=\(writable)")
        let bits = Int(bitPattern: address)
        // The outer mapping owns the address now: the inner one is unmapped (and the range fenced) when the
        // outer's last view goes.
        return GrantMapping(address: address, domain: domain, refs: refs, writable: writable) {
            () throws(GrantTableError) in
            let raw = UnsafeMutableRawPointer(bitPattern: bits)
            try handle.unmap()
            // MAP_FIXED_NOREPLACE (0x100000): never clobber a mapping someone made in between.
            let placed = mmap(raw, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | 0x10_0000, -1, 0)
            let ok = placed != MAP_FAILED && placed == raw
            Self.log("\(label) unmap #\(id) \(raw.map { "\($0)" } ?? "nil") guard=\(ok ? "ok" : "LOST errno \(errno)")")
        }
    }

    private static func log(_ line: String) {
        let text = "XT-GNT \(line)\n"
        _ = text.withCString { write(2, $0, strlen($0)) }
    }
}
