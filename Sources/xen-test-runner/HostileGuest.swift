import BlkifProtocol
import BlockFront
import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `xen-test-runner hostile-guest`: the runner again, inside the `hostile` group's domU
/// (scripts/xen/hostile-init.sh), acting as a frontend gone bad. It reads commands typed on its console, one
/// per line, "ID VERB ARGS", and answers each with one line "XT-DOMU ID ..." (see ``HostileChecks``):
///   ID blk MODE FRONT BACK   -> one blkif connection attempt in MODE (``HostileAttacks/blk(_:front:back:devices:)``)
///   ID flap N FRONT BACK     -> the frontend state Initialised <-> Closed N times, then one clean READ
///   ID flood HOME            -> a flood of xenstore nodes, watches and transactions until the daemon refuses
///   ID con MODE FRONT        -> an extra console whose ring this guest breaks (``HostileConsole``)
/// A command that fails answers "ID failed WHY".
enum HostileGuest {
    static func main() async -> Int32 {
        let devices: GuestDevices
        do { devices = try await GuestDevices.open() } catch {
            say("error=opening xenbus, gntalloc, evtchn: \(error)")
            return 1
        }
        say("ready")
        while let line = await blocking({ readLine() }) {
            let words = line.split { $0 == " " || $0 == "\r" }.map(String.init)
            guard words.count >= 2 else { continue }
            let (id, verb, arguments) = (words[0], words[1], Array(words.dropFirst(2)))
            do {
                say("\(id) " + (try await run(verb, arguments, devices: devices)))
            } catch {
                say("\(id) failed \(error)")
            }
        }
        say("error=console input ended")
        return 1
    }

    static func run(_ verb: String, _ arguments: [String], devices: GuestDevices) async throws -> String {
        switch (verb, arguments.count) {
        case ("blk", 3):
            return try await HostileAttacks.blk(arguments[0], front: arguments[1], back: arguments[2], devices: devices)
        case ("flap", 3):
            return try await flap(Int(arguments[0]) ?? 1, front: arguments[1], back: arguments[2], devices: devices)
        case ("con", 2):
            return try await HostileConsole.run(arguments[0], front: arguments[1], devices: devices)
        case ("flood", 1):
            return try await HostileFlood.run(home: arguments[0], client: devices.client)
        default:
            throw CheckFailure("unknown command \(verb) \(arguments)")
        }
    }

    /// One report line on the console (stdout, written at once).
    static func say(_ text: String) {
        let line = "XT-DOMU \(text)\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
    }

    // MARK: - State flapping (step 5)

    /// Offers the ring (valid this time) and then flips the frontend state Initialised <-> Closed `times` times
    /// as fast as xenstore takes it; then stays Initialised, waits for the backend to settle on Connected and
    /// reads one sector: the backend must still serve.
    static func flap(_ times: Int, front: String, back: String, devices: GuestDevices) async throws -> String {
        let link = HostileConnection(devices: devices, front: front, back: back)
        do {
            try link.setUp(.normal)
            let first = try await link.offer()
            let bus = devices.bus
            for _ in 0..<times {
                try await bus.write(front + "/state", XenbusState.closed.xenstoreValue)
                try await bus.write(front + "/state", XenbusState.initialised.xenstoreValue)
            }
            // Settled: Connected twice in a row, a second apart.
            var settled = false
            var now: XenbusState?
            for _ in 0..<60 where !settled {
                let before = try await bus.state(of: back)
                try await Task.sleep(for: .seconds(1))
                now = try await bus.state(of: back)
                settled = before == .connected && now == .connected
            }
            try require(settled, "the backend did not settle on Connected (\(String(describing: now)))")
            let page = try unwrap(link.data, "no data pages").refs[0]
            BlkifRequest.direct(.init(operation: .read, handle: 0, id: 99, sector: 0, segments: [.init(grant: page)]))
                .encode(into: try link.nextSlot())
            try link.publish()
            let answer = try await link.responses().first
            try await link.close()
            return
                "first=\(first.map { "\($0)" } ?? "gone") flapped=\(times) read=\(answer.map { "\($0.status)" } ?? "none")"
        } catch {
            link.release()
            throw error
        }
    }
}
