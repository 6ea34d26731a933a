import BlockBack
import BlockFront
import XenCore
import XenStoreClient
import Xenbus

/// The `hostile` steps that are more than one connection attempt: the xenstore flood, the state flapping, and
/// the end of the domain.
extension Hostile {
    // MARK: - Step 4: a xenstore flood

    /// The guest floods the daemon while dom0 keeps the bystander disk busy and times its own xenstore reads;
    /// the daemon must refuse the guest at its quotas, and dom0 must never wait long.
    func flood(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        let bus = try bus()
        let guest = guest
        let done = StopFlag()
        let asking = Task {
            defer { done.raise() }
            return try await guest.ask("x1", "flood /local/domain/\(domain)", seconds: 240)
        }
        var reads = 0
        var slowestRead = Duration.zero
        var slowestTrip = Duration.zero
        var during = 0
        while !done.raised {
            let start = ContinuousClock.now
            try await bystanderTrip()
            slowestTrip = max(slowestTrip, ContinuousClock.now - start)
            during += 1
            for _ in 0..<10 {
                let readStart = ContinuousClock.now
                _ = try await bus.read("/local/domain/0/name")
                slowestRead = max(slowestRead, ContinuousClock.now - readStart)
                reads += 1
            }
        }
        let text = try await asking.value
        let answer = DomUNetChecks.fields(text)
        func refusedBeforeCap(_ key: String, cap: Int) -> Bool {
            let parts = (answer[key] ?? "").split(separator: "/")
            guard parts.count == 2, let count = Int(parts[0]) else { return false }
            return count < cap && parts[1] != "none"
        }
        try require(answer["after"] == "ok", "the guest's xenstore connection after the flood: \(text)")
        try require(answer["big"].map { $0 != "none" } ?? false, "a 3000-byte value was accepted: \(text)")
        try require(refusedBeforeCap("nodes", cap: HostileFlood.nodeCap), "no node quota: \(text)")
        try require(refusedBeforeCap("watches", cap: HostileFlood.watchCap), "no watch quota: \(text)")
        // Our vbd still serves this guest after the flood.
        let outcome = try await attempt("x2", "clean")
        try HostileChecks.expectServed(outcome)
        try require(outcome.answer["read"] == "OKAY", "after the flood: \(outcome.text)")
        report.detail(
            "guest: \(text); meanwhile dom0: \(during) bystander round trips (slowest \(slowestTrip)), \(reads) "
                + "xenstore reads (slowest \(slowestRead)); then a clean attempt: \(outcome.text)")
    }

    // MARK: - Step 5: state flapping

    /// BlockBack serves the vbd in a loop (a frontend that closes may come back) while the guest flips its state
    /// Initialised <-> Closed; the guest must then be served one READ, and the loop must end when the toolstack
    /// takes the vbd offline.
    func flap(_ report: Report) async throws {
        let nodes = try unwrap(nodes, "no vbd nodes")
        let bus = try bus()
        try await nodes.destroy(in: bus)
        try await nodes.create(in: bus)
        let serving = Task { [self] () -> (served: Int, errors: [String]) in
            var served = 0
            var errors: [String] = []
            // A backstop against a spin: a serve that failed at once 100 times ends the loop (and the check).
            while errors.count < 100, (try? await nodes.isOnline(in: bus)) == true {
                do {
                    try await serve(nodes, bus: bus).value
                    served += 1
                } catch { errors.append("\(error)") }
            }
            return (served, errors)
        }
        let command = "flap \(HostileChecks.flaps) \(nodes.frontendPath) \(nodes.backendPath)"
        let text = try await guest.ask("s1", command, seconds: 240)
        try await bus.write(nodes.backendPath + "/online", "0")
        let (served, errors) = try await within(60, "the serving loop to end once the vbd is offline") {
            await serving.value
        }
        try require(errors.count < 100, "serve failed \(errors.count) times in a row: \(errors.suffix(3))")
        try require(DomUNetChecks.fields(text)["read"] == "OKAY", "after flapping: \(text)")
        try await settle(nodes, bus: bus)
        let kinds = Set(errors.map { $0.prefix { $0 != ":" } })
        report.detail(
            "guest: \(text); BlockBack served \(served) connection(s), \(errors.count) ended with a typed error "
                + "\(kinds.sorted()); \(summary())")
    }

    // MARK: - Destroy

    func destroy(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        let bus = try bus()
        try await ChildProcess.checked([GuestToolstack.xl, "destroy", "\(domain)"], seconds: 90)
        guest.domain = nil
        if !primaryBroken { try await GuestToolstack.waitDetached(.primary, of: domain, consoles: guest.consoles) }
        // With every grant of the guest unmapped, Xen can free it: the domain leaves xl list entirely.
        try await GuestToolstack.waitUntilGone(domain)
        if let nodes { try await nodes.destroy(in: bus) }
        if let bystander {
            try await bystander.detach(bus: bus)
            self.bystander = nil
        }
        let counts = try unwrap(grants, "no grant table").snapshot
        try require(counts.live == 0, "\(counts.live) mapping(s) of the guest's grants still alive")
        // Mappings older than the group (another group's, released meanwhile) may go too: never more than before.
        let pages = try await within(30, "dom0's gntdev pages to return to \(baseline)") { [baseline] in
            while true {
                let pages = Gntdev.mappedPages()
                if pages >= 0, pages <= baseline { return pages }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
        report.detail(
            "domain \(domain) gone at \(guest.elapsed()); gntdev pages \(pages) (\(baseline) before the group); "
                + summary())
    }

    /// Best effort whatever failed: no domain, no nodes, no bystander left behind.
    func cleanUp() async {
        await guest.destroyDomain()
        if let client = guest.client {
            let bus = XenStoreBus(client: client)
            if let nodes { try? await nodes.destroy(in: bus) }
            if let bystander { try? await bystander.detach(bus: bus) }
        }
        bystander?.server.cancel()
        events?.close()
        await guest.close()
    }
}
