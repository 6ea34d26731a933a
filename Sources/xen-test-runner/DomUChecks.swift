import BlkifProtocol
import BlockBack
import BlockDevice
import BlockFront
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

/// A real PV domU (Debian's kernel, a busybox initramfs: scripts/xen/domu-init.sh) started with `xl create`
/// and served only by our code: its primary console by our ``ConsoleDaemon`` with a ``PtyConsoleSink`` (no
/// xenconsoled runs: our daemon publishes the `tty` key libxl waits for, and the checks read and type on that
/// pty as `xl console` would), its disk
/// xvda by our ``BlockBack`` over a file in dom0 (the kernel's xen-blkback is unloaded first). The guest
/// prints the md5 of its disk on our console, reads a line we type into that console, writes to its disk;
/// the checks compare all of it with the backing file, then destroy the domain and watch our backends
/// notice and let go of the guest's memory.
enum DomUChecks {
    static let name = "swiftxen-domu"
    static let config = "/opt/domu/domu.cfg"
    static let xl = "/usr/sbin/xl"
    static let diskPath = "/tmp/domu-disk.img"
    static let diskBytes = 16 << 20
    /// xvda: major 202, minor 0.
    static let virtualDevice: UInt32 = 51712
    /// Lines the guest prints in one burst (scripts/xen/domu-init.sh).
    static let bulkLines = 1000
    /// Debugging knobs (XT_DOMU_DISK=none: no vbd at all; XT_DOMU_CONSOLE=xenconsoled: Xen's daemon serves
    /// the console, /init started it): to bisect a defect between our two backends.
    static let diskServed = getenv("XT_DOMU_DISK").map { String(cString: $0) } != "none"
    static let ourConsole = getenv("XT_DOMU_CONSOLE").map { String(cString: $0) } != "xenconsoled"

    static func run(_ report: Report) async {
        let domU = DomU()
        await report.check("domU: xl create -p (no disk, no vif, no xenconsoled)", limit: 150) {
            try await domU.create(report)
        }
        await report.check("domU: boots on our ConsoleDaemon (primary console) and BlockBack (xvda)", limit: 300) {
            try await domU.boot(report)
        }
        await report.check("domU: 1000 lines (~64 KiB) through our console ring, in order, intact", limit: 180) {
            try await domU.bulk(report)
        }
        await report.check("domU: our console input reaches the guest; its disk writes land in our file", limit: 120) {
            try await domU.exchange(report)
        }
        await report.check("domU: xl destroy; our BlockBack and ConsoleDaemon notice and let go", limit: 120) {
            try await domU.destroy(report)
        }
        await domU.cleanUp()
    }
}

/// What the console daemon reported, filled by the task following its events.
final class ConsoleEvents: Sendable {
    let attached = Mutex<[ConsoleID: ConsoleBackSession]>([:])
    let detached = Mutex<[(ConsoleID, ConsoleError?)]>([])
}

/// A flag one task raises and a reader thread polls.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var raised: Bool { flag.load(ordering: .acquiring) }
    func raise() { flag.store(true, ordering: .releasing) }
}

/// The one test domain and our backends serving it, carried from check to check.
actor DomU {
    let transcript = ConsoleTranscript(marker: "XT-DOMU")
    private var domain: DomainID?
    private var client: XenStoreClient?
    private var daemon: ConsoleDaemon?
    private var tasks: [Task<Void, Never>] = []
    private let consoles = ConsoleEvents()
    private var nodes: VirtualBlockDeviceNodes?
    private var blockBack: Task<Void, any Error>?
    private var expectedMD5 = ""
    /// Our end of the pty (the slave side, as `xl console` opens it).
    private var tty: Int32 = -1
    private let ttyStop = StopFlag()
    private var ttyReader: Task<Void, Never>?
    private var token = ""
    private let started = ContinuousClock.now

    private func elapsed() -> String {
        let value = ContinuousClock.now - started
        return "\(value.components.seconds)s"
    }

    // MARK: - Create

    func create(_ report: Report) async throws {
        try writeDisk()
        let sum = try await ChildProcess.checked(["/bin/md5sum", DomUChecks.diskPath], seconds: 60)
        expectedMD5 = String(sum.prefix(32))
        // What xencommons leaves for libxl (dom0's name and domid, /local/pool/<id>/name), written again:
        // an earlier group may have removed it (the conversation replay's `RM /` succeeds on oxenstored).
        try await ChildProcess.checked(["/usr/sbin/xen-init-dom0"], seconds: 60)
        // Ours replaces xenconsoled: none may be running.
        let consoled = Self.processes(named: "xenconsoled")
        try require(consoled.isEmpty == DomUChecks.ourConsole, "xenconsoled pids \(consoled)")
        // The kernel's xen-blkback serves every backend/vbd directory of dom0: it must not race ours.
        if Files.mode("/sys/module/xen_blkback") != nil {
            try await ChildProcess.checked(["/bin/rmmod", "xen_blkback"], seconds: 30)
        }
        let client = try await XenStoreClient.connect(socketPath: "/var/run/xenstored/socket")
        self.client = client
        // Our console daemon is up before the domain exists, as xenconsoled would be.
        if DomUChecks.ourConsole {
            let daemon = ConsoleDaemon(
                xenstore: client, grantTable: GuardedGrantTable.wrap(try XenGrantTable(), label: "console"),
                eventChannel: try XenEventChannel()
            ) { _ throws(ConsoleError) in try PtyConsoleSink() }
            self.daemon = daemon
            let consoles = self.consoles
            tasks.append(Task { try? await daemon.run() })
            tasks.append(
                Task {
                    for await event in daemon.events {
                        switch event {
                        case .attached(let session): consoles.attached.withLock { $0[session.id] = session }
                        case .detached(let id, let reason): consoles.detached.withLock { $0.append((id, reason)) }
                        }
                    }
                })
        }
        var config = DomUChecks.config
        if !DomUChecks.diskServed {
            let text = try unwrap(Files.read(config), "read \(config)")
            config = "/tmp/domu.cfg"
            let edited = text.split(separator: "\n").map {
                $0.hasPrefix("extra") ? "extra = \"console=hvc0 loglevel=4 xt.disk=none\"" : String($0)
            }
            let fd = open(config, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            try require(fd >= 0, errnoText("open \(config)"))
            close(fd)
            try require(Files.write(config, edited.joined(separator: "\n") + "\n"), "write \(config)")
        }
        let created = try await ChildProcess.run(
            [DomUChecks.xl, "create", "-p", "-e", config], seconds: 120)
        try require(created.status == 0 && !created.timedOut, "xl create: \(created)")
        let domid = try await ChildProcess.checked([DomUChecks.xl, "domid", DomUChecks.name], seconds: 30)
        let id = try unwrap(
            UInt16(domid.split(whereSeparator: \.isWhitespace).first ?? ""), "xl domid printed \"\(domid)\"")
        domain = DomainID(id)
        let type = try await client.immediate { handle in try await handle.read("/local/domain/\(id)/console/type") }
        report.detail("domid \(id), console type \(type), created in \(elapsed())")
    }

    /// The pids whose /proc/<pid>/comm is `name`.
    static func processes(named name: String) -> [Int32] {
        guard let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        var found: [Int32] = []
        while let entry = readdir(dir) {
            let pidText = String(decoding: Posix.name(of: entry), as: UTF8.self)
            guard let pid = Int32(pidText), Files.trimmed("/proc/\(pid)/comm") == name else { continue }
            found.append(pid)
        }
        return found
    }

    /// A 16 MiB file whose every 8-byte word names its own offset: any misplaced sector shows.
    private func writeDisk() throws {
        let fd = open(DomUChecks.diskPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        try require(fd >= 0, errnoText("open \(DomUChecks.diskPath)"))
        defer { close(fd) }
        let chunk = 1 << 20
        var words = [UInt64](repeating: 0, count: chunk / 8)
        for base in stride(from: 0, to: DomUChecks.diskBytes, by: chunk) {
            for index in words.indices { words[index] = 0x5357_4946_0000_0000 | UInt64(base + index * 8) }
            let written = words.withUnsafeBytes { pwrite(fd, $0.baseAddress, chunk, off_t(base)) }
            try require(written == chunk, errnoText("pwrite \(DomUChecks.diskPath)"))
        }
    }

    // MARK: - Boot

    func boot(_ report: Report) async throws {
        let domain = try unwrap(domain, "no domain (xl create failed)")
        let client = try unwrap(client, "no xenstore client")
        let primary = ConsoleID(domain: domain, device: .primary)
        let consoles = self.consoles
        let session: ConsoleBackSession? =
            DomUChecks.ourConsole
            ? try await within(60, "ConsoleDaemon to attach \(primary)") {
                while true {
                    if let session = consoles.attached.withLock({ $0[primary] }) { return session }
                    try await Task.sleep(for: .milliseconds(100))
                }
            } : nil
        // xl create returned only once the daemon had published the pty (libxl waits for `tty`).
        let ttyKey = "\(primary.frontendPath)/\(ConsoleKeys.tty)"
        let tty = try await client.immediate { handle in try await handle.read(ttyKey) }
        let ttyFD = open(tty, O_RDWR | O_NOCTTY | O_CLOEXEC)
        try require(ttyFD >= 0, errnoText("open \(tty) (\(ttyKey))"))
        self.tty = ttyFD
        let transcript = self.transcript
        let stop = ttyStop
        ttyReader = Task { await blocking { Self.readTTY(ttyFD, into: transcript, stop: stop) } }

        let bus = XenStoreBus(client: client)
        guard DomUChecks.diskServed else {
            try await ChildProcess.checked([DomUChecks.xl, "unpause", "\(domain)"], seconds: 30)
            _ = try await transcript.wait(for: "up", seconds: 240)
            report.detail("no disk (XT_DOMU_DISK=none); \(transcript.count) console bytes")
            return
        }
        let nodes = VirtualBlockDeviceNodes(
            backendDomain: .dom0, frontendDomain: domain, deviceID: DomUChecks.virtualDevice)
        try await nodes.destroy(in: bus)
        try await nodes.create(in: bus)
        self.nodes = nodes
        let disk = try FileBlockDevice(path: DomUChecks.diskPath)
        blockBack = Task {
            try await BlockBack.serve(
                disk, backendPath: nodes.backendPath, store: bus,
                grants: GuardedGrantTable.wrap(try XenGrantTable(), label: "blkback"),
                events: try XenEventChannel(), options: BlockBackOptions(domain: .dom0))
        }
        try await ChildProcess.checked([DomUChecks.xl, "unpause", "\(domain)"], seconds: 30)

        _ = try await transcript.wait(for: "up", seconds: 240)
        let upAt = elapsed()
        let disk1: String
        do {
            disk1 = try await transcript.wait(for: "disk ", seconds: 60)
        } catch {
            // Where the handshake stood, for the failure line.
            let front = try? await ChildProcess.run(["/usr/bin/xenstore-ls", "-f", nodes.frontendPath], seconds: 20)
            let back = try? await ChildProcess.run(["/usr/bin/xenstore-ls", "-f", nodes.backendPath], seconds: 20)
            let dump = [front, back].compactMap { $0?.output }.joined(separator: "\n")
            throw CheckFailure("\(error); xenstore: \(dump.split(separator: "\n").joined(separator: "; "))")
        }
        let backendState = try await bus.state(of: nodes.backendPath)
        try require(backendState == .connected, "our backend is \(String(describing: backendState))")
        try require(
            disk1 == "size=\(DomUChecks.diskBytes) md5=\(expectedMD5)",
            "the domU read \"\(disk1)\", the file has size=\(DomUChecks.diskBytes) md5=\(expectedMD5)")
        // What the guest's xen-blkfront negotiated with our backend.
        let keys = try await bus.readKeys(
            ["multi-queue-num-queues", "ring-page-order", "feature-persistent"], in: nodes.frontendPath)
        let negotiated = keys.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        report.detail(
            "\(session.map { "\($0.id)" } ?? "xenconsoled") on pty \(tty); domU init at \(upAt), disk md5 verified at \(elapsed()), "
                + "\(transcript.count) console bytes; blkfront: \(negotiated)")
    }

    /// Copies the pty's output into the transcript until it hangs up (the console closed) or `stop`.
    private static func readTTY(_ fd: Int32, into transcript: ConsoleTranscript, stop: StopFlag) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !stop.raised {
            // Any event (data, hang-up, error) makes read answer at once.
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 200) == 1 else { continue }
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR || errno == EAGAIN { continue }
            if count <= 0 { break }
            transcript.append(Array(chunk[0..<count]))
        }
        transcript.end()
    }

    // MARK: - Both directions

    /// The guest's numbered lines, each exactly once, in order, payload intact: many ring-fulls, each
    /// drained by us and announced to the guest by event.
    func bulk(_ report: Report) async throws {
        let before = elapsed()
        let done = try await transcript.wait(for: "bulk-done ", seconds: 150)
        try require(done == "count=\(DomUChecks.bulkLines)", "bulk-done \(done)")
        let payload = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
        let bulk = transcript.lines.filter { $0.contains("XT-BULK ") }
        if bulk.count != DomUChecks.bulkLines {
            // Say which lines are missing and quote what arrived around the first gap (escaped), so that a
            // loss can be told from a line split by a guest kernel message or garbled bytes.
            let seen = Set(bulk.compactMap { line in line.split(separator: " ").dropFirst().first.flatMap { Int($0) } })
            let missing = (0..<DomUChecks.bulkLines).filter { !seen.contains($0) }
            let context =
                missing.first.map { first in
                    transcript.lines.filter {
                        $0.contains("XT-BULK \(first - 1) ") || $0.contains("XT-BULK \(first + 1) ")
                    }
                    .map { $0.debugDescription }.joined(separator: " | ")
                } ?? ""
            throw CheckFailure(
                "\(bulk.count) XT-BULK lines, want \(DomUChecks.bulkLines); missing \(missing.prefix(8)); "
                    + "around the first: \(context); lines without the marker near it: "
                    + transcript.lines.filter { !$0.contains("XT-") && !$0.isEmpty }.suffix(6)
                    .map { $0.debugDescription }.joined(separator: " | "))
        }
        for (index, line) in bulk.enumerated() where !line.hasSuffix("XT-BULK \(index) \(payload)") {
            throw CheckFailure("line \(index) arrived as \"\(line)\"")
        }
        report.detail("\(transcript.count) console bytes by \(elapsed()) (bulk from \(before))")
    }

    func exchange(_ report: Report) async throws {
        let domain = try unwrap(domain, "no domain")
        let session = consoles.attached.withLock { $0[ConsoleID(domain: domain, device: .primary)] }
        try require(session != nil || !DomUChecks.ourConsole, "no console session")
        _ = try await transcript.wait(for: "ready", seconds: 30)
        token = "swiftxen-\(UInt32.random(in: 0...UInt32.max))"
        let bytes = Array("\(token)\n".utf8)
        let typed = bytes.withUnsafeBytes { write(tty, $0.baseAddress, $0.count) }
        try require(typed == bytes.count, errnoText("write to the pty"))
        let echoed = try await transcript.wait(for: "echo=", seconds: 60)
        try require(echoed == token, "typed \(token), the domU read \"\(echoed)\"")
        _ = try await transcript.wait(for: "wrote", seconds: 90)
        guard DomUChecks.diskServed else { return report.detail("echo at \(elapsed()) (no disk)") }

        let fd = open(DomUChecks.diskPath, O_RDONLY | O_CLOEXEC)
        try require(fd >= 0, errnoText("open \(DomUChecks.diskPath)"))
        defer { close(fd) }
        var copied = [UInt64](repeating: 0, count: (1 << 20) / 8)
        let count = copied.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(8 << 20)) }
        try require(count == 1 << 20, errnoText("pread"))
        for (index, word) in copied.enumerated() where word != 0x5357_4946_0000_0000 | UInt64(index * 8) {
            throw CheckFailure("word \(index) of the copy at 8 MiB is \(word): the domU's write did not land")
        }
        var line = [UInt8](repeating: 0, count: token.utf8.count + 1)
        let lineCount = line.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(20480 * 512)) }
        try require(lineCount == line.count, errnoText("pread"))
        try require(line == Array("\(token)\n".utf8), "at 10 MiB: \(String(decoding: line, as: UTF8.self))")
        report.detail(
            "echo and 1 MiB + \(line.count) B written at \(elapsed()); \(session.map { "\($0.statistics)" } ?? "")")
    }

    // MARK: - Destroy

    func destroy(_ report: Report) async throws {
        let domain = try unwrap(domain, "no domain")
        try await ChildProcess.checked([DomUChecks.xl, "destroy", "\(domain)"], seconds: 90)
        self.domain = nil
        let primary = ConsoleID(domain: domain, device: .primary)
        if let blockBack {
            // The frontend directory went with the domain: serve() closes and returns normally.
            try await within(60, "BlockBack.serve to return after the domain was destroyed") {
                try await blockBack.value
            }
        }
        let consoles = self.consoles
        if DomUChecks.ourConsole {
            let reason = try await within(60, "ConsoleDaemon to detach \(primary)") {
                while true {
                    if let entry = consoles.detached.withLock({ $0.first { $0.0 == primary } }) { return entry.1 }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
            try require(reason == nil, "console detached with \(String(describing: reason))")
        }
        let transcript = self.transcript
        try await within(30, "the console's pty to hang up") {
            while !transcript.ended { try await Task.sleep(for: .milliseconds(100)) }
        }
        if let daemon {
            let served = await daemon.servedConsoles
            try require(served.isEmpty, "the daemon still serves \(served)")
        }
        if let nodes, let client {
            let bus = XenStoreBus(client: client)
            try require(try await bus.state(of: nodes.backendPath) == .closed, "backend not Closed")
            try await nodes.destroy(in: bus)
        }
        // With every grant of the guest unmapped, Xen can free it: the domain leaves xl list entirely.
        try await within(60, "domain \(domain) to disappear (mappings released)") {
            while true {
                let listed = try await ChildProcess.run([DomUChecks.xl, "list"], seconds: 30)
                let ids = listed.output.split(separator: "\n").dropFirst().compactMap {
                    $0.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { UInt16($0) }
                }
                if listed.status == 0, !ids.contains(domain.rawValue) { return }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        report.detail("destroyed and released at \(elapsed())")
    }

    /// Best effort whatever failed: no domain, no daemon, no nodes left behind.
    func cleanUp() async {
        if let domain { _ = try? await ChildProcess.run([DomUChecks.xl, "destroy", "\(domain)"], seconds: 60) }
        blockBack?.cancel()
        ttyStop.raise()
        for task in tasks { task.cancel() }
        // The reader polls its flag every 200 ms; only then may its descriptor be closed.
        await ttyReader?.value
        if tty >= 0 { close(tty) }
        if let nodes, let client { try? await nodes.destroy(in: XenStoreBus(client: client)) }
        await client?.close()
        unlink(DomUChecks.diskPath)
        // Give the kernel's backend back to whatever runs after us.
        if Files.mode("/sys/module/xen_blkback") == nil {
            _ = try? await ChildProcess.run(["/bin/insmod", "/lib/modules/xen-blkback.ko"], seconds: 30)
        }
    }
}
