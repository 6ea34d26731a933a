import Synchronization
import XenCore
import XenStoreClient
import XenStoreProtocol

/// Our XenStoreClient against the real daemon (C xenstored or oxenstored, per boot), over the unix socket
/// and over /dev/xen/xenbus: every call of the seed signature, conflicting transactions, wait and watches,
/// and the domain-management calls dom0 may make.
enum XenStoreClientChecks {
    enum Transport: String, CaseIterable {
        case socket
        case xenbus

        /// A client whose `resume()` reconnects over the same kind of transport.
        func client() async throws -> XenStoreClient {
            switch self {
            case .socket:
                return try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
            case .xenbus:
                let opener: @Sendable () async throws(XenStoreError) -> any XenStoreTransport = {
                    () async throws(XenStoreError) -> any XenStoreTransport in
                    try XenbusDeviceTransport.open(path: "/dev/xen/xenbus")
                }
                return XenStoreClient(transport: try await opener(), reconnect: opener)
            }
        }
    }

    static func run(_ report: Report) async {
        for transport in Transport.allCases {
            await runTransport(transport, report)
        }
    }

    static func runTransport(_ transport: Transport, _ report: Report) async {
        let name = "XenStoreClient[\(transport.rawValue)]"
        let base = "/xt/client/\(transport.rawValue)"

        await report.check("\(name): immediate write/read/directory/mkdir/exists/rm, ENOENT typed") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            try await client.immediate { handle in
                try await handle.write("\(base)/a", "alpha")
                try await handle.createDirectory("\(base)/dir")
                try require(try await handle.read("\(base)/a") == "alpha", "read back differs")
                try require(try await handle.read("\(base)/dir") == "", "mkdir value not empty")
                let listing = try await handle.directory(base).sorted()
                try require(listing == ["a", "dir"], "directory \(listing)")
                try require(try await handle.exists("\(base)/a"), "exists false")
                try await handle.remove(base)
                try require(!(try await handle.exists("\(base)/a")), "exists after rm")
                do {
                    _ = try await handle.read("\(base)/a")
                    throw CheckFailure("read of a removed node succeeded")
                } catch XenStoreError.noEntry(let path, _) {
                    try require(path == "\(base)/a", "ENOENT carries path \(path)")
                }
            }
        }
        await report.check("\(name): setperms/getperms round trip; ACLs naming missing domains") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            // Only existing domains may appear in an ACL on the real daemons (XSA-322), and here only
            // domain 0 exists: owner 0, everyone may read.
            let wanted = XenStorePermissions(owner: .dom0, others: .read)
            var note = ""
            try await client.immediate { handle in
                try await handle.write("\(base)/p", "x")
                try await handle.setPermissions("\(base)/p", to: wanted)
                let got = try await handle.permissions(of: "\(base)/p")
                try require(got == wanted, "getperms \(got), set \(wanted)")
                let missing = XenStorePermissions(owner: DomainID(7), others: .none)
                note =
                    "setperms(owner 7)=" + (await outcome { try await handle.setPermissions("\(base)/p", to: missing) })
                try await handle.remove("\(base)/p")
            }
            report.detail(note)
        }
        await report.check("\(name): 64 requests multiplexed on one connection") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            try await client.immediate { handle in
                for index in 0..<8 { try await handle.write("\(base)/m/\(index)", "v\(index)") }
            }
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for request in 0..<64 {
                    group.addTask {
                        let index = request % 8
                        return try await client.immediate { try await $0.read("\(base)/m/\(index)") } == "v\(index)"
                    }
                }
                for try await ok in group { try require(ok, "a multiplexed read got another request's reply") }
            }
            try await client.immediate { try await $0.remove("\(base)/m") }
        }
        await report.check("\(name): conflicting transactions: EAGAIN, retried, committed once") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            let other = try await transport.client()
            defer { Task { await other.close() } }
            try await client.immediate { try await $0.write("\(base)/counter", "0") }
            let attempts = Counter()
            try await client.transaction { handle in
                let run = attempts.increment()
                let value = Int(try await handle.read("\(base)/counter")) ?? -1
                if run == 1 {
                    // Another connection changes what this transaction read: the commit must fail.
                    try await other.immediate { try await $0.write("\(base)/counter", "100") }
                }
                try await handle.write("\(base)/counter", String(value + 1))
            }
            let final = try await client.immediate { try await $0.read("\(base)/counter") }
            try require(attempts.value == 2, "body ran \(attempts.value) times, want 2")
            try require(final == "101", "counter \(final), want 101")
        }
        await report.check("\(name): a throwing transaction body leaves no trace") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            do {
                try await client.transaction { handle in
                    try await handle.write("\(base)/aborted", "x")
                    throw CheckFailure("deliberate")
                }
            } catch is CheckFailure {}
            let exists = try await client.immediate { try await $0.exists("\(base)/aborted") }
            try require(!exists, "aborted transaction's write is visible")
        }
        await report.check("\(name): wait returns once another writer makes it true") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            try await client.immediate { try await $0.write("\(base)/flag", "wait") }
            let waiter = Task {
                try await client.wait { handle -> String in
                    let value = try await handle.read("\(base)/flag")
                    guard value.hasPrefix("go") else { throw XenStoreError.again }
                    return value
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            let writer = try await transport.client()
            defer { Task { await writer.close() } }
            try await writer.immediate { try await $0.write("\(base)/flag", "go-now") }
            let value = try await within(20, "wait to return") { try await waiter.value }
            try require(value == "go-now", "wait returned \(value)")
        }
        await report.check("\(name): watches: initial event, child write, unwatch") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            try await client.immediate { try await $0.write("\(base)/w", "") }
            let events = try await client.watches("\(base)/w")
            let seen = try await within(20, "watch events") { () -> [String] in
                var iterator = events.makeAsyncIterator()
                var paths: [String] = []
                guard let first = try await iterator.next() else { return paths }
                paths.append(first.path)
                try await client.immediate { try await $0.write("\(base)/w/child", "1") }
                while let event = try await iterator.next() {
                    paths.append(event.path)
                    if event.path == "\(base)/w/child" { break }
                }
                return paths
            }
            events.cancel()
            try require(seen.first == "\(base)/w", "first event \(seen.first ?? "none")")
            try require(seen.last == "\(base)/w/child", "events \(seen)")
        }
        await report.check("\(name): manual watch/unwatch with a token") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            let events = client.events(token: "xt-token")
            try await client.immediate { try await $0.watch("\(base)/manual", token: "xt-token") }
            let first = try await within(20, "manual watch event") { () -> XenStoreWatchEvent? in
                var iterator = events.makeAsyncIterator()
                return try await iterator.next()
            }
            try require(
                first?.token == "xt-token" && first?.path == "\(base)/manual", "event \(String(describing: first))")
            try await client.immediate { try await $0.unwatch("\(base)/manual", token: "xt-token") }
            events.cancel()
        }
        await report.check("\(name): suspend parks requests, resume reconnects and runs them") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            try await client.immediate { try await $0.write("\(base)/s", "before") }
            await client.suspend()
            let parked = Task { try await client.immediate { try await $0.read("\(base)/s") } }
            try await Task.sleep(for: .milliseconds(200))
            try await client.resume()
            let value = try await within(20, "parked request") { try await parked.value }
            try require(value == "before", "parked read got \(value)")
        }
        await report.check("\(name): getdomainpath, is-introduced, debug, restrict, introduce/release/set_target") {
            let client = try await transport.client()
            defer { Task { await client.close() } }
            var notes: [String] = []
            try await client.immediate { handle in
                let home = try await handle.domainPath(of: .dom0)
                try require(home == "/local/domain/0", "getdomainpath(0) = \(home)")
                try require(try await handle.isDomainIntroduced(.dom0), "dom0 not introduced")
                let missing = DomainID(31000)
                notes.append("isDomainIntroduced(31000)=" + String(try await handle.isDomainIntroduced(missing)))
                notes.append("debug=" + (await outcome { _ = try await handle.debug(["print", "xen-test"]) }))
                notes.append(
                    "introduce(31000)="
                        + (await outcome { try await handle.introduce(missing, frame: 0, port: EventChannelPort(1)) }))
                notes.append("release(31000)=" + (await outcome { try await handle.release(missing) }))
                notes.append(
                    "set_target(31000,31001)="
                        + (await outcome { try await handle.setTarget(missing, target: DomainID(31001)) }))
            }
            // restrict on a connection of its own: it may drop this connection's privileges.
            let restricted = try await transport.client()
            defer { Task { await restricted.close() } }
            notes.append(
                "restrict(5)="
                    + (await outcome { try await restricted.immediate { try await $0.restrict(DomainID(5)) } }))
            // Whatever the daemon refused, the first connection still works.
            let home = try await client.immediate { try await $0.domainPath(of: .dom0) }
            try require(home == "/local/domain/0", "connection broken after refused calls")
            report.detail(notes.joined(separator: " "))
        }
    }

    /// "ok" or the typed error's description: the daemons differ here, and the line records which way.
    static func outcome(_ body: () async throws -> Void) async -> String {
        do {
            try await body()
            return "ok"
        } catch let error as XenStoreError {
            switch error {
            case .disconnected, .protocolViolation, .malformedReply, .unexpectedReply: return "BROKEN(\(error))"
            default: return shortName(error)
            }
        } catch {
            return "\(error)"
        }
    }

    static func shortName(_ error: XenStoreError) -> String {
        switch error {
        case .noEntry: "ENOENT"
        case .invalid: "EINVAL"
        case .accessDenied: "EACCES"
        case .notPermitted: "EPERM"
        case .notSupported: "ENOSYS"
        case .eexist: "EEXIST"
        case .alreadyConnected: "EISCONN"
        case .unknown(let name, _, _): name
        default: "\(error)"
        }
    }
}

/// A counter shared with a transaction body (which may run several times).
final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() -> Int {
        count.withLock {
            $0 += 1; return $0
        }
    }
    var value: Int { count.withLock { $0 } }
}
