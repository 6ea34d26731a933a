import BlkifProtocol
import BlockBack
import BlockFront
import XenCore
import XenStoreClient

/// A hostile guest on real Xen (group `hostile`): a PV domU whose /init (scripts/xen/hostile-init.sh) runs
/// this very runner as `xen-test-runner hostile-guest` (``HostileGuest``), a frontend gone bad using our own
/// GrantTable (gntalloc), EventChannel and XenStoreClient (xenbus device) inside the guest. Dom0 writes a vbd
/// for it (served by our ``BlockBack`` over a memory disk) and types one attack at a time on its console:
/// req_prod far beyond the ring; rsp_prod/rsp_event overwritten, requests replayed, req_prod rewound; slots
/// rewritten while the backend reads them; ring refs never granted or read-only, a bogus event channel;
/// garbage requests (refs never granted, read-only or granted to another domain, bad segments and sectors, bad
/// indirect pages and counts, unknown operations); a xenstore flood to the daemon's quotas; its state flapping
/// between Initialised and Closed; two extra consoles broken. After each, dom0 checks that BlockBack answered
/// with errors or disconnected that vbd with a typed error, that no mapping of the guest is left, and that a
/// bystander disk (the dom0 kernel's xen-blkfront on another BlockBack of this process) still round-trips.
/// Then the same guest connects cleanly; last, its primary console's ring is broken (the console it answers
/// on), and `xl destroy` must free the domain and leave dom0's gntdev mappings as before.
enum HostileChecks {
    static let name = "swiftxen-hostile"
    static let config = "/opt/domu/hostile.cfg"
    /// The guest's vbd (xvda) and the bystander's (xvdc in dom0).
    static let virtualDevice: UInt32 = 51712
    static let bystanderDevice = 51744
    static let bystanderNode = "/dev/xvdc"
    /// Not "vbd": the dom0 kernel's xen-blkback serves every backend/vbd directory.
    static let backendClass = "swiftxen-vbd"
    static let sectors = HostileAttacks.sectors
    static let flaps = 50

    static func run(_ report: Report) async {
        let hostile = Hostile()
        await report.check(
            "hostile: xl create -p; a vbd on our BlockBack, a bystander disk for dom0's blkfront", limit: 180
        ) {
            try await hostile.create(report)
        }
        await report.check("hostile: the guest boots and runs xen-test-runner hostile-guest", limit: 300) {
            try await hostile.boot(report)
        }
        await report.check(
            "hostile: req_prod 1000 beyond the ring: that vbd is disconnected (frontendBroke)", limit: 240
        ) {
            let outcome = try await hostile.attempt("o1", "overflow")
            try expectBroken(outcome)
            try require(outcome.answer["first"] == "OKAY", "the request before the overflow: \(outcome.text)")
            report.detail("guest: \(outcome.text); \(outcome.ending); \(await hostile.summary())")
        }
        await report.check("hostile: rsp_* overwritten, 96 replayed requests answered, req_prod rewound", limit: 240) {
            let outcome = try await hostile.attempt("r1", "replay")
            try expectBroken(outcome)
            try require(outcome.answer["okay"] == "96", "replayed requests answered OKAY: \(outcome.text)")
            report.detail("guest: \(outcome.text); \(outcome.ending); \(await hostile.summary())")
        }
        await report.check("hostile: slots rewritten while BlockBack reads them: each answered once", limit: 240) {
            let outcome = try await hostile.attempt("f1", "flip")
            try expectServed(outcome)
            try require(outcome.answer["answered"] == "128/128", "answers: \(outcome.text)")
            report.detail("guest: \(outcome.text); \(outcome.ending); \(await hostile.summary())")
        }
        await report.check(
            "hostile: ring never granted, read-only ring, bogus port: typed error, vbd closed", limit: 300
        ) {
            var seen: [String] = []
            for (index, mode) in ["ring-never-granted", "ring-read-only", "ring-bogus-port"].enumerated() {
                let outcome = try await hostile.attempt("g\(index)", mode)
                guard case .failure(let error) = outcome.served, let error = error as? BlockBackError,
                    case .resources = error
                else { throw CheckFailure("\(mode): serve ended with \(outcome.served); guest: \(outcome.text)") }
                try require(outcome.answer["backend"] != "Connected", "\(mode): the guest saw \(outcome.text)")
                seen.append("\(mode): guest saw \(outcome.answer["backend"] ?? "?"), \(outcome.ending)")
            }
            report.detail("\(seen.joined(separator: ", ")); \(await hostile.summary())")
        }
        await report.check(
            "hostile: 24 garbage requests, each ERROR (valid ones OKAY), without and with persistent grants", limit: 300
        ) {
            var seen: [String] = []
            for (id, mode) in [("q1", "requests"), ("q2", "requests-persistent")] {
                let outcome = try await hostile.attempt(id, mode)
                try expectServed(outcome)
                try require(
                    outcome.answer["answered"] == "24/24" && outcome.answer["mismatches"] == "none",
                    "\(mode): \(outcome.text)")
                seen.append("\(mode): \(outcome.text)")
            }
            report.detail("guest: \(seen.joined(separator: "; ")); \(await hostile.summary())")
        }
        await report.check("hostile: a xenstore flood stops at the daemon's quotas; dom0 keeps serving", limit: 300) {
            try await hostile.flood(report)
        }
        await report.check("hostile: state flapping Initialised <-> Closed \(flaps) times; then served", limit: 300) {
            try await hostile.flap(report)
        }
        await report.check(
            "hostile: two extra consoles broken (out_prod, ring ref): each dropped, primary serves", limit: 300
        ) {
            try await hostile.consoleAttacks(report)
        }
        await report.check("hostile: then a well-behaved connection of the same guest: write, read back", limit: 240) {
            let outcome = try await hostile.attempt("c1", "clean")
            try expectServed(outcome)
            try require(
                outcome.answer["write"] == "OKAY" && outcome.answer["read"] == "OKAY"
                    && outcome.answer["same"] == "true",
                "clean attempt: \(outcome.text)")
            report.detail("guest: \(outcome.text); \(outcome.ending); \(await hostile.summary())")
        }
        await report.check(
            "hostile: primary console in_cons 5000 past in_prod: the daemon drops it (typed error), dom0 serves on",
            limit: 180
        ) {
            try await hostile.primaryConsoleAttack(report)
        }
        await report.check("hostile: xl destroy frees the domain; dom0's gntdev mappings are as before", limit: 180) {
            try await hostile.destroy(report)
        }
        await hostile.cleanUp()
    }

    static func expectBroken(_ outcome: Hostile.Outcome) throws {
        guard case .failure(let error) = outcome.served, let error = error as? BlockBackError,
            case .frontendBroke = error
        else { throw CheckFailure("serve ended with \(outcome.served), want frontendBroke; guest: \(outcome.text)") }
        try require(
            outcome.text.contains("=Closed") || outcome.text.contains("=Closing"),
            "the guest did not see its vbd disconnected: \(outcome.text)")
    }

    static func expectServed(_ outcome: Hostile.Outcome) throws {
        guard case .success = outcome.served else {
            throw CheckFailure("serve ended with \(outcome.served), want a normal close; guest: \(outcome.text)")
        }
        try require(outcome.answer["backend"] == "Connected", "the guest was not connected: \(outcome.text)")
    }
}
