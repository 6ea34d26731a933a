import BlockBack
import BlockDevice
import BlockFront
import ConsoleBackend
import EventChannel
import GrantTable
import XenCore
import XenStoreClient
import Xenbus

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The one test domain and our backends serving it, carried from check to check (see ``DomUChecks``).
actor DomU {
    var guest = GuestSession()
    var nodes: VirtualBlockDeviceNodes?
    /// The backend's serving loop (one `BlockBack.serve` per frontend connection, until the vbd goes
    /// offline); answers how many times `serve` returned.
    var blockBack: Task<Int, any Error>?
    var blockGrants: (any GrantTableBackend)?
    var blockEvents: (any EventChannelBackend)?
    var expectedMD5 = ""
    /// The second console's pty, read as `xl console` would.
    var second: PtyReader?
    var token = ""

    // MARK: - Create

    func create(_ report: Report) async throws {
        try writeDisk()
        expectedMD5 = try await fileMD5()
        // The kernel's xen-blkback serves every backend/vbd directory of dom0: it must not race ours.
        if Files.mode("/sys/module/xen_blkback") != nil {
            try await ChildProcess.checked(["/bin/rmmod", "xen_blkback"], seconds: 30)
        }
        guest = try await GuestToolstack.start(config: DomUChecks.config, name: DomUChecks.name)
        let id = try unwrap(guest.domain, "no domain")
        let client = try unwrap(guest.client, "no xenstore client")
        // The second console's device, as a toolstack creates it before the guest runs.
        try await ConsoleToolstack.createDevice(
            ConsoleID(domain: id, device: .extra(DomUChecks.secondConsole)), name: "second",
            xenstore: client)
        let type = try await client.immediate { handle in try await handle.read("/local/domain/\(id)/console/type") }
        let online = Files.trimmed("/sys/devices/system/cpu/online") ?? "?"
        report.detail("domid \(id), console type \(type), created in \(guest.elapsed()); dom0 CPUs online: \(online)")
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

    /// The md5 of the backing file now.
    func fileMD5() async throws -> String {
        String(try await ChildProcess.checked(["/bin/md5sum", DomUChecks.diskPath], seconds: 60).prefix(32))
    }

    // MARK: - Boot

    func boot(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain (xl create failed)")
        let client = try unwrap(guest.client, "no xenstore client")
        let (session, reader, tty) = try await guest.openPrimary()
        guest.primary = reader
        let transcript = try guest.transcript

        let bus = XenStoreBus(client: client)
        let nodes = VirtualBlockDeviceNodes(
            backendDomain: .dom0, frontendDomain: domain, deviceID: DomUChecks.virtualDevice)
        try await nodes.destroy(in: bus)
        try await nodes.create(in: bus)
        self.nodes = nodes
        blockGrants = GuardedGrantTable.wrap(try XenGrantTable(), label: "blkback")
        blockEvents = try XenEventChannel()
        try startServing()
        try await guest.unpause(untilReady: false)
        let upAt = guest.elapsed()
        let disk1: String
        do {
            disk1 = try await transcript.wait(for: "disk ", seconds: 90)
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
        // What the guest's xen-blkfront negotiated with our backend: two queues, a multi-page ring.
        let keys = try await bus.readKeys(
            ["multi-queue-num-queues", "ring-page-order", "feature-persistent"], in: nodes.frontendPath)
        try require(
            keys["multi-queue-num-queues"] == "\(DomUChecks.queues)"
                && keys["ring-page-order"] == "\(DomUChecks.ringPageOrder)",
            "blkfront negotiated \(keys)")
        let queues = try await transcript.wait(for: "queues=", seconds: 30)
        try require(queues == "\(DomUChecks.queues)", "the guest's xvda has \(queues) hardware queue(s)")
        let negotiated = keys.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        report.detail(
            "\(session.id) on pty \(tty); domU init at \(upAt), disk md5 verified at \(guest.elapsed()), "
                + "\(transcript.count) console bytes; blkfront: \(negotiated)")
    }

    /// Starts the loop serving xvda: one `BlockBack.serve` per frontend connection (a guest reloading its
    /// driver connects again) until the toolstack takes the vbd offline.
    func startServing() throws {
        blockBack = try GuestToolstack.serveFile(
            DomUChecks.diskPath, nodes: try unwrap(nodes, "no vbd nodes"),
            client: try unwrap(guest.client, "no xenstore client"), grants: try unwrap(blockGrants, "no grant table"),
            events: try unwrap(blockEvents, "no event channels"))
    }

    // MARK: - Both directions

    /// The guest's numbered lines, each exactly once, in order, payload intact: many ring-fulls, each
    /// drained by us and announced to the guest by event.
    func bulk(_ report: Report) async throws {
        let transcript = try guest.transcript
        let before = guest.elapsed()
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
        report.detail("\(transcript.count) console bytes by \(guest.elapsed()) (bulk from \(before))")
    }

    func exchange(_ report: Report) async throws {
        let domain = try unwrap(guest.domain, "no domain")
        let session = try unwrap(
            guest.consoles.attached.withLock { $0[ConsoleID(domain: domain, device: .primary)] }, "no console session")
        let transcript = try guest.transcript
        _ = try await transcript.wait(for: "ready", seconds: 30)
        token = "swiftxen-\(UInt32.random(in: 0...UInt32.max))"
        try unwrap(guest.primary, "no pty").type("\(token)\n")
        let echoed = try await transcript.wait(for: "echo=", seconds: 60)
        try require(echoed == token, "typed \(token), the domU read \"\(echoed)\"")
        _ = try await transcript.wait(for: "wrote", seconds: 90)

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
        report.detail("echo and 1 MiB + \(line.count) B written at \(guest.elapsed()); \(session.statistics)")
    }
}
