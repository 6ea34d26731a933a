import EventChannel
import GrantTable
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Our GrantTable and EventChannel real backends (XenGntshr, XenGrantTable, XenEventChannel over CXen) on
/// the real hypervisor, dom0 sharing with and signalling itself.
enum GrantTableChecks {
    static func run(_ report: Report) async {
        report.check("GrantTable: XenGntshr share + XenGrantTable map, writes visible both ways") {
            let gntshr = try XenGntshr()
            defer { gntshr.close() }
            let gnttab = try XenGrantTable()
            let shared = try gntshr.sharePages(with: .dom0, count: 1, writable: true)
            let mapping = try gnttab.map(domain: .dom0, ref: shared.refs[0], writable: true)
            shared.buffer.setUInt64(0x0123_4567_89AB_CDEF, at: 8)
            try require(mapping.buffer.uint64(at: 8) == 0x0123_4567_89AB_CDEF, "sharer's write not visible")
            mapping.buffer.setUInt32(0xFEED_BEEF, at: 4000)
            try require(shared.buffer.uint32(at: 4000) == 0xFEED_BEEF, "mapper's write not visible")
            try mapping.unmap()
            try shared.unshare()
        }
        report.check("GrantTable: 4-page share mapped with mapv is contiguous and in order") {
            let gntshr = try XenGntshr()
            defer { gntshr.close() }
            let gnttab = try XenGrantTable()
            let shared = try gntshr.sharePages(with: .dom0, count: 4, writable: true)
            try require(Set(shared.refs).count == 4, "refs not distinct: \(shared.refs)")
            for page in 0..<4 { shared.buffer.setUInt32(0xA000_0000 | UInt32(page), at: page * xenPageSize + 12) }
            let mapping = try gnttab.mapv(domain: .dom0, refs: shared.refs, writable: false)
            try require(mapping.buffer.count == 4 * xenPageSize, "mapping is \(mapping.buffer.count) bytes")
            for page in 0..<4 {
                let value = mapping.buffer.uint32(at: page * xenPageSize + 12)
                try require(value == 0xA000_0000 | UInt32(page), "page \(page) reads \(value)")
            }
            try mapping.unmap()
            try shared.unshare()
        }
        report.check("GrantTable: read-only share refuses a writable map") {
            let gntshr = try XenGntshr()
            defer { gntshr.close() }
            let gnttab = try XenGrantTable()
            let shared = try gntshr.sharePages(with: .dom0, count: 1, writable: false)
            do {
                let mapping = try gnttab.map(domain: .dom0, ref: shared.refs[0], writable: true)
                try? mapping.unmap()
                throw CheckFailure("writable map of a read-only grant succeeded")
            } catch let error as GrantTableError {
                guard case .system = error else { throw CheckFailure("unexpected \(error)") }
            }
            let readable = try gnttab.map(domain: .dom0, ref: shared.refs[0], writable: false)
            try readable.unmap()
            try shared.unshare()
        }
        report.check("GrantTable: unshare while the other side maps, then unmap", limit: 60) {
            let gntshr = try XenGntshr()
            defer { gntshr.close() }
            let gnttab = try XenGrantTable()
            let shared = try gntshr.sharePages(with: .dom0, count: 1, writable: true)
            let ref = shared.refs[0]
            shared.buffer.setUInt32(0x600D_CAFE, at: 0)
            let mapping = try gnttab.map(domain: .dom0, ref: ref, writable: true)
            try shared.unshare()  // gntalloc revokes the grant only after the mapper lets go
            try require(mapping.buffer.uint32(at: 0) == 0x600D_CAFE, "mapped page lost its contents")
            try mapping.unmap()
            // gntalloc ends foreign access only once the mapper let go, and Linux retries a busy end_access
            // from a timer (the XSA-396 deferral): the reference stops mapping within a few seconds.
            var revoked = false
            for _ in 0..<50 where !revoked {
                if let again = try? gnttab.map(domain: .dom0, ref: ref, writable: false) {
                    try? again.unmap()
                    usleep(200_000)
                } else {
                    revoked = true
                }
            }
            try require(revoked, "grant \(ref) still maps 10 s after unshare + unmap")
        }
        report.check("GrantTable: gntalloc limit gives tableFull, freeing recovers", limit: 120) {
            let gntshr = try XenGntshr()
            defer { gntshr.close() }
            var shares: [SharedPagesHandle] = []
            var full = false
            // gntalloc's default limit is 1024 grants per system; stop well past it.
            for _ in 0..<80 {
                do {
                    shares.append(SharedPagesHandle(try gntshr.sharePages(with: .dom0, count: 16, writable: true)))
                } catch GrantTableError.tableFull {
                    full = true
                    break
                }
            }
            try require(full, "no tableFull after \(shares.count * 16) shared pages")
            let held = shares.count * 16
            for share in shares { try share.unshare() }
            let after = try gntshr.sharePages(with: .dom0, count: 16, writable: true)
            try after.unshare()
            try require(held >= 512, "limit hit after only \(held) pages")
        }
        await report.check("EventChannel: XenEventChannel interdomain loopback, notify both ways") {
            let left = try XenEventChannel()
            defer { left.close() }
            let right = try XenEventChannel()
            defer { right.close() }
            let leftPort = try left.bindUnboundPort(remote: .dom0)
            let rightPort = try right.bindInterdomain(remote: .dom0, remotePort: leftPort)
            for round in 0..<3 {
                try left.notify(leftPort)
                try await expectEvent(right, rightPort, "left->right round \(round)")
                try right.notify(rightPort)
                try await expectEvent(left, leftPort, "right->left round \(round)")
            }
            try left.unbind(leftPort)
            try right.unbind(rightPort)
        }
        await report.check("EventChannel: notify burst coalesces, unbind ends the sequence") {
            let left = try XenEventChannel()
            defer { left.close() }
            let right = try XenEventChannel()
            defer { right.close() }
            let leftPort = try left.bindUnboundPort(remote: .dom0)
            let rightPort = try right.bindInterdomain(remote: .dom0, remotePort: leftPort)
            for _ in 0..<10 { try left.notify(leftPort) }
            try await expectEvent(right, rightPort, "burst")
            let sequence = right.notifications(rightPort)
            try right.unbind(rightPort)
            let after = try await within(10, "sequence end after unbind") {
                var iterator = sequence.makeAsyncIterator()
                return await iterator.next()
            }
            try require(after == nil, "events after unbind: \(String(describing: after))")
            try left.unbind(leftPort)
        }
        report.check("EventChannel: bad binds and notifies fail with the hypervisor's errno") {
            let channel = try XenEventChannel()
            defer { channel.close() }
            let port = try channel.bindUnboundPort(remote: .dom0)
            try expectSystemError("bind_interdomain to a port not bound", errno: EINVAL) {
                _ = try channel.bindInterdomain(remote: .dom0, remotePort: EventChannelPort(4000))
            }
            try expectSystemError("bind_interdomain to a missing domain", errno: ESRCH) {
                _ = try channel.bindInterdomain(remote: DomainID(31000), remotePort: port)
            }
            // Xen does not check the remote domain of an unbound port (SimulatedHypervisor agrees).
            let early = try channel.bindUnboundPort(remote: DomainID(31000))
            try channel.unbind(early)
            try channel.unbind(port)
            try expectSystemError("notify an unbound port", errno: nil) { try channel.notify(port) }
        }
    }

    static func expectEvent(_ channel: XenEventChannel, _ port: EventChannelPort, _ what: String) async throws {
        let sequence = channel.notifications(port)
        let got = try await within(10, "event \(what)") {
            var iterator = sequence.makeAsyncIterator()
            return await iterator.next()
        }
        try require(got == port, "\(what): got \(String(describing: got))")
    }

    static func expectSystemError(_ what: String, errno expected: Int32?, _ body: () throws -> Void) throws {
        do {
            try body()
        } catch EventChannelError.system(let operation, let code) {
            try require(expected == nil || code == expected, "\(what): \(operation) errno \(code), want \(expected!)")
            return
        } catch {
            throw CheckFailure("\(what): unexpected \(error)")
        }
        throw CheckFailure("\(what) succeeded")
    }
}
