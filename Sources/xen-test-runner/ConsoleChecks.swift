import ConsoleBackend
import EventChannel
import GrantTable
import Synchronization
import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Our ConsoleFrontend (sharing its ring page through gntalloc, as a guest would) and our ConsoleBack
/// (mapping that page through gntdev, binding the frontend's port) both in dom0, on real grants, real
/// event channels (loopback to domain 0) and the real xenstored: an extra console end to end.
enum ConsoleChecks {
    /// Well away from anything a toolstack would create for dom0.
    static let devid: UInt32 = 7
    /// Every 2 KiB ring-full is an event round trip through two poll threads of an emulated (TCG) dom0.
    static let guestToBackend = 256 * 1024
    static let backendToGuest = 64 * 1024

    /// dom0's own kernel is a console frontend too (hvc_xen registers its xenbus frontend driver in every
    /// domain): a `device/console/<n>` directory appearing under /local/domain/0 is claimed by it, and it
    /// publishes its own page and port in the same nodes. This file turns it off for the check.
    static let autoprobe = "/sys/bus/xen/drivers_autoprobe"

    static func run(_ report: Report) async {
        await report.check("Console: dom0's kernel (hvc_xen) claims a new device/console/N", limit: 60) {
            let (id, client) = try await freshDevice()
            defer { Task { await client.close() } }
            let driverLink = "/sys/bus/xen/devices/console-\(devid)/driver"
            var driver: String?
            for _ in 0..<50 where driver == nil {
                driver = Files.link(driverLink)
                if driver == nil { try await Task.sleep(for: .milliseconds(100)) }
            }
            let ringRef = await
                (try? client.immediate { handle in try await handle.read("\(id.frontendPath)/ring-ref") })
            report.detail("driver \(driver ?? "none"), kernel's ring-ref \(ringRef ?? "none")")
            try await ConsoleToolstack.destroyDevice(id, xenstore: client)
            try require(driver != nil, "no driver bound to console-\(devid) within 5 s")
            // The kernel lets its device go when it sees the directory removed: wait for that, or the next
            // check's fresh console-N would find the old one still bound.
            try await within(30, "the kernel to drop console-\(devid)") {
                while access("/sys/bus/xen/devices/console-\(devid)", F_OK) == 0 {
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        let previous = Files.trimmed(autoprobe) ?? "1"
        Files.write(autoprobe, "0")
        defer { Files.write(autoprobe, previous) }
        await report.check("ConsoleBack/Frontend: extra console over gntalloc/gntdev and evtchn", limit: 180) {
            let (id, client) = try await freshDevice()
            defer { Task { await client.close() } }
            let claimed = Files.link("/sys/bus/xen/devices/console-\(devid)/driver")
            try require(claimed == nil, "the kernel's \(claimed ?? "") claimed console-\(devid) despite autoprobe 0")
            // Each side gets its own evtchn and grant device handles, as two domains would.
            let back = ConsoleBack(
                id: id, xenstore: client, grantTable: try XenGrantTable(), eventChannel: try XenEventChannel())
            let backConnect = Task { try await back.connect() }
            let front: ConsoleFrontend
            do {
                front = try await within(60, "ConsoleFrontend.connect") {
                    try await ConsoleFrontend.connect(
                        domain: .dom0, devid: devid, xenstore: client, gntshr: try XenGntshr(),
                        eventChannel: try XenEventChannel())
                }
            } catch {
                backConnect.cancel()
                throw error
            }
            let session: ConsoleBackSession
            do {
                session = try await within(60, "ConsoleBack.connect") { try await backConnect.value }
            } catch {
                await front.close()
                throw error
            }
            do {
                try await exercise(report, front: front, session: session, client: client, id: id)
            } catch {
                await front.close()
                await session.close()
                try? await ConsoleToolstack.destroyDevice(id, xenstore: client)
                throw error
            }
            try await closeAndRemove(front: front, session: session, client: client, id: id)
        }
    }

    /// Node states, then 1 MiB guest→backend and 64 KiB backend→guest, each checked by checksum and count.
    static func exercise(
        _ report: Report, front: ConsoleFrontend, session: ConsoleBackSession, client: XenStoreClient, id: ConsoleID
    ) async throws {
        let backendPath = try unwrap(id.backendPath(backend: .dom0), "no backend path")
        let states = try await client.immediate { handle in
            (
                try await handle.read("\(backendPath)/state"),
                try await handle.read("\(id.frontendPath)/ring-ref"), try await handle.read("\(id.frontendPath)/port")
            )
        }
        try require(XenbusState(xenstoreValue: states.0) == .connected, "backend state \(states.0)")
        report.detail("ring-ref \(states.1), port \(states.2), backend port \(session.localPort)")
        // Guest → backend: the writer blocks on the 2 KiB out ring until the backend drains it.
        let sent = pattern(count: guestToBackend, seed: 0x5a)
        let writer = Task { try await front.write(sent) }
        let backendProgress = Progress()
        var started = MonotonicClock.nanoseconds()
        let received = try await withProgress(backendProgress, state: { state(front: front, session: session) }) {
            try await within(100, "backend reads \(guestToBackend) B") {
                try await drain(count: guestToBackend, into: backendProgress) { try await session.connection.read() }
            }
        }
        let guestSeconds = MonotonicClock.nanoseconds() - started
        try await within(30, "frontend write returns") { try await writer.value }
        try require(received.count == sent.count, "backend got \(received.count) of \(sent.count) B")
        try require(checksum(received) == checksum(sent), "guest→backend checksum differs")

        // Backend → guest: the 1 KiB in ring.
        let typed = pattern(count: backendToGuest, seed: 0xa5)
        let typer = Task { try await session.write(typed) }
        let frontProgress = Progress()
        started = MonotonicClock.nanoseconds()
        let got = try await withProgress(frontProgress, state: { state(front: front, session: session) }) {
            try await within(50, "frontend reads \(backendToGuest) B") {
                try await drain(count: backendToGuest, into: frontProgress) { try await front.read() }
            }
        }
        report.detail(
            "guest→backend \(guestToBackend / 1024) KiB in \(guestSeconds / 1_000_000) ms, "
                + "backend→guest \(backendToGuest / 1024) KiB in \((MonotonicClock.nanoseconds() - started) / 1_000_000) ms"
        )
        try await within(30, "backend write returns") { try await typer.value }
        try require(got.count == typed.count, "guest got \(got.count) of \(typed.count) B")
        try require(checksum(got) == checksum(typed), "backend→guest checksum differs")
        let statistics = session.statistics
        try require(
            statistics.totalRead == UInt64(guestToBackend) && statistics.totalWrite == UInt64(backendToGuest),
            "statistics \(statistics)")
    }

    /// Frontend closes (state Closed), the backend notices and unmaps, the toolstack removes both directories.
    static func closeAndRemove(
        front: ConsoleFrontend, session: ConsoleBackSession, client: XenStoreClient, id: ConsoleID
    ) async throws {
        await front.close()
        let reason = try await within(30, "backend notices the frontend closing") { await session.closed() }
        if case .closed = reason {} else { throw CheckFailure("backend closed with \(reason)") }
        let released = try await within(30, "backend close") { await session.close() }
        try require(released == nil, "the backend could not unmap the ring: \(String(describing: released))")
        let backendPath = try unwrap(id.backendPath(backend: .dom0), "no backend path")
        let backendState = try await client.immediate { handle in try await handle.read("\(backendPath)/state") }
        try require(XenbusState(xenstoreValue: backendState) == .closed, "backend state \(backendState) after close")
        try await ConsoleToolstack.destroyDevice(id, xenstore: client)
        let left = try await client.immediate { handle in
            (try await handle.exists(backendPath), try await handle.exists(id.frontendPath))
        }
        try require(!left.0 && !left.1, "nodes left after destroy: backend \(left.0), frontend \(left.1)")
    }

    // MARK: - Helpers

    /// A new connection to the real xenstored and console `devid` of dom0 created afresh by our toolstack.
    static func freshDevice() async throws -> (ConsoleID, XenStoreClient) {
        let id = ConsoleID(domain: .dom0, device: .extra(devid))
        let client = try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
        do {
            try await ConsoleToolstack.destroyDevice(id, xenstore: client)
            try await ConsoleToolstack.createDevice(id, name: "swiftxen-check", xenstore: client)
        } catch {
            await client.close()
            throw error
        }
        return (id, client)
    }

    /// Runs `body`, adding how far `progress` got to its failure.
    static func withProgress<T>(
        _ progress: Progress, state: () -> String, _ body: () async throws -> T
    ) async throws -> T {
        do { return try await body() } catch { throw CheckFailure("\(error) (got \(progress); \(state()))") }
    }

    /// Both sides' counters, failures and the four ring indices as each side's mapping shows them.
    static func state(front: ConsoleFrontend, session: ConsoleBackSession) -> String {
        func indices(_ page: PageBuffer?) -> String {
            guard let page else { return "released" }
            return (0..<4).map { String(page.uint32(at: 3072 + 4 * $0)) }.joined(separator: "/")
        }
        func side(_ connection: ConsoleConnection) -> String {
            let page = connection.page
            let failure = String(describing: connection.failure)
            return "\(connection.statistics) \(failure) gone \(connection.isPeerGone) idx \(indices(page)) "
                + "flag \(connection.ringConnectionFlag) \(page.map { mapsLine($0) } ?? "")"
        }
        return "front \(side(front.connection)); back \(side(session.connection))"
    }

    /// The /proc/self/maps line holding `page`'s first byte (what backs it: gntalloc, gntdev, anonymous).
    static func mapsLine(_ page: PageBuffer) -> String {
        let address = UInt(bitPattern: Int(bitPattern: page.pointer))
        let lines = (Files.read("/proc/self/maps") ?? "").split(separator: "\n")
        for line in lines {
            let range = line.prefix { $0 != " " }.split(separator: "-")
            guard range.count == 2, let low = UInt(range[0], radix: 16), let high = UInt(range[1], radix: 16)
            else { continue }
            if low <= address && address < high { return "\(hex(address)) in \(line)" }
        }
        return "\(hex(address)) not mapped"
    }

    static func hex(_ value: some BinaryInteger) -> String { "0x" + String(value, radix: 16) }

    static func drain(count: Int, into progress: Progress, _ next: () async throws -> [UInt8]) async throws
        -> [UInt8]
    {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count {
            bytes += try await next()
            progress.set(bytes.count)
        }
        return bytes
    }

    static func pattern(count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) ^ seed }
    }

    /// FNV-1a 64.
    static func checksum(_ bytes: [UInt8]) -> UInt64 {
        bytes.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }
}

/// Bytes a transfer has moved so far, for the timeout message.
final class Progress: Sendable, CustomStringConvertible {
    private let bytes = Mutex(0)

    func set(_ count: Int) { bytes.withLock { $0 = count } }

    var description: String { "\(bytes.withLock { $0 }) B" }
}
