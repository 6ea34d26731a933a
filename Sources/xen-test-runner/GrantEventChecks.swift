import CXen
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The C grant and event-channel libraries on the real hypervisor, dom0 talking to itself: a page shared
/// to domain 0 with gntalloc and mapped back with gntdev is the same memory, and a loopback event channel
/// carries notifications both ways. The Swift GrantTable/EventChannel checks build on these facts.
enum GrantEventChecks {
    static func run(_ report: Report) {
        report.check("libxengnttab: self-grant maps the same memory both ways") {
            guard let shr = xengntshr_open(nil, 0) else { throw CheckFailure(errnoText("xengntshr_open")) }
            defer { xengntshr_close(shr) }
            guard let tab = xengnttab_open(nil, 0) else { throw CheckFailure(errnoText("xengnttab_open")) }
            defer { xengnttab_close(tab) }
            var ref: UInt32 = 0
            let shared = try unwrap(
                xengntshr_share_pages(shr, UInt32(DomainID.dom0.rawValue), 1, &ref, 1), errnoText("share"))
            defer { xengntshr_unshare(shr, shared, 1) }
            let grant = GrantRef(ref)
            let mapped = try unwrap(
                xengnttab_map_grant_ref(tab, UInt32(DomainID.dom0.rawValue), grant.rawValue, PROT_READ | PROT_WRITE),
                errnoText("map grant \(grant)"))
            defer { xengnttab_unmap(tab, mapped, 1) }
            try require(mapped != shared, "mapping returned the sharing address")
            let sharedPage = PageBuffer(storage: PageStorage(borrowing: shared, byteCount: xenPageSize))
            let mappedPage = PageBuffer(storage: PageStorage(borrowing: mapped, byteCount: xenPageSize))
            sharedPage.setUInt64(0x5857_4946_5458_454E, at: 0)
            try require(mappedPage.uint64(at: 0) == 0x5857_4946_5458_454E, "granter's write not seen by mapper")
            mappedPage.setUInt32(0xCAFE_F00D, at: 4092)
            try require(sharedPage.uint32(at: 4092) == 0xCAFE_F00D, "mapper's write not seen by granter")
        }
        report.check("libxenevtchn: loopback channel notifies both ways") {
            guard let left = xenevtchn_open(nil, 0) else { throw CheckFailure(errnoText("xenevtchn_open")) }
            defer { xenevtchn_close(left) }
            guard let right = xenevtchn_open(nil, 0) else { throw CheckFailure(errnoText("xenevtchn_open")) }
            defer { xenevtchn_close(right) }
            let unbound = xenevtchn_bind_unbound_port(left, UInt32(DomainID.dom0.rawValue))
            try require(unbound >= 0, errnoText("bind_unbound_port"))
            let bound = xenevtchn_bind_interdomain(right, UInt32(DomainID.dom0.rawValue), UInt32(unbound))
            try require(bound >= 0, errnoText("bind_interdomain"))
            let leftPort = EventChannelPort(UInt32(unbound))
            let rightPort = EventChannelPort(UInt32(bound))
            try notifyAndExpect(from: left, port: leftPort, to: right, expecting: rightPort)
            try notifyAndExpect(from: right, port: rightPort, to: left, expecting: leftPort)
            try notifyAndExpect(from: left, port: leftPort, to: right, expecting: rightPort)  // after unmask
            xenevtchn_unbind(right, rightPort.rawValue)
            xenevtchn_unbind(left, leftPort.rawValue)
        }
    }

    static func notifyAndExpect(
        from sender: OpaquePointer, port: EventChannelPort, to receiver: OpaquePointer,
        expecting expected: EventChannelPort
    ) throws(CheckFailure) {
        try require(xenevtchn_notify(sender, port.rawValue) == 0, errnoText("notify \(port)"))
        try require(Files.waitReadable(xenevtchn_fd(receiver), milliseconds: 10_000), "no event on \(expected)")
        let pending = xenevtchn_pending(receiver)
        try require(pending >= 0 && UInt32(pending) == expected.rawValue, "pending \(pending), want \(expected)")
        try require(xenevtchn_unmask(receiver, expected.rawValue) == 0, errnoText("unmask \(expected)"))
    }
}
