import DomainUserdata
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// DomainUserdata's real path: libxenctrl answers which domains exist (XenControlDomainDirectory), and the
/// files land where libxl keeps them (/var/lib/xen/userdata-d.<domid>.<uuid>.<userid>).
enum UserdataChecks {
    static let root = "/var/lib/xen"

    static func run(_ report: Report) {
        report.check("DomainUserdata: libxenctrl knows domain 0 and no domain 31000") {
            let directory = try XenControlDomainDirectory()
            let dom0 = try directory.uuid(of: .dom0)
            try require(dom0 != nil, "no UUID for domain 0")
            try require(try directory.uuid(of: DomainID(31000)) == nil, "domain 31000 exists")
            report.detail("dom0 uuid \(dom0.map { "\($0)" } ?? "-")")
        }
        report.check("DomainUserdata: store/retrieve/unlink for domain 0 in libxl's file layout") {
            let directory = try XenControlDomainDirectory()
            let uuid = try unwrap(try directory.uuid(of: .dom0), "no UUID for domain 0")
            let store = UserdataStore(root: root, domains: directory)
            let payload = Array("{\"xen-test\": true}".utf8)
            try store.store(domid: .dom0, userid: .libxlJSON, data: payload)
            let file = "\(root)/userdata-d.0.\(uuid).libxl-json"  // libxl: userdata-%s.%u.%s.%s
            try require(Files.read(file) == String(decoding: payload, as: UTF8.self), "\(file) missing or differs")
            try require(try store.retrieve(domid: .dom0, userid: .libxlJSON) == payload, "retrieve differs")
            try store.unlink(domid: .dom0, userid: .libxlJSON)
            try require(Files.mode(file) == nil, "\(file) still there after unlink")
            try require(try store.retrieve(domid: .dom0, userid: .libxlJSON) == nil, "retrieve after unlink")
        }
        report.check("DomainUserdata: storing for a missing domain fails with noSuchDomain") {
            let store = UserdataStore(root: root, domains: try XenControlDomainDirectory())
            do {
                try store.store(domid: DomainID(31000), userid: .xl, data: [1])
                throw CheckFailure("store for domain 31000 succeeded")
            } catch UserdataError.noSuchDomain(let domid) {
                try require(domid == DomainID(31000), "error names domain \(domid)")
            }
        }
        report.check("DomainUserdata: the collector sweeps a dead domain's files, keeps domain 0's") {
            let directory = try XenControlDomainDirectory()
            let uuid = try unwrap(try directory.uuid(of: .dom0), "no UUID for domain 0")
            let store = UserdataStore(root: root, domains: directory)
            try store.store(domid: .dom0, userid: .xl, data: Array("keep".utf8))
            let dead = "\(root)/userdata-d.31000.11111111-2222-3333-4444-555555555555.xl"
            let fd = open(dead, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
            try require(fd >= 0, errnoText("create \(dead)"))
            _ = write(fd, "gone", 4)
            close(fd)
            let collected = try UserdataCollector(store: store).sweep()
            try require(Files.mode(dead) == nil, "dead domain's file survived: \(collected)")
            try require(collected.contains { $0.domid == DomainID(31000) }, "sweep reported \(collected)")
            try require(try store.retrieve(domid: .dom0, userid: .xl) == Array("keep".utf8), "dom0's data lost")
            try store.unlink(domid: .dom0, userid: .xl)
            _ = uuid
        }
    }
}
