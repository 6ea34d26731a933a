import ConsoleBackend
import Synchronization
import XenCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A real PV domU (Debian's kernel, two vCPUs, a busybox initramfs: scripts/xen/domu-init.sh) started with
/// `xl create` and served only by our code: its primary console and a second console by our
/// ``ConsoleDaemon`` on ptys (no xenconsoled runs: our daemon publishes the `tty` key libxl waits for, and
/// the checks read and type on those ptys as `xl console` would), its disk xvda by our ``BlockBack`` over a
/// file in dom0 (the kernel's xen-blkback is unloaded first), with two queues and a multi-page ring. The
/// guest prints the md5 of its disk on our console, reads a line we type into it, writes to its disk, writes
/// to its second console, survives the toolstack detaching and re-attaching its disk and its own driver
/// reconnecting; the checks compare all of it with the backing file, then destroy the domain and watch our
/// backends notice and let go of the guest's memory.
enum DomUChecks {
    static let name = "swiftxen-domu"
    static let config = "/opt/domu/domu.cfg"
    static let diskPath = "/tmp/domu-disk.img"
    static let diskBytes = 16 << 20
    /// xvda: major 202, minor 0.
    static let virtualDevice: UInt32 = 51712
    /// Lines the guest prints in one burst (scripts/xen/domu-init.sh).
    static let bulkLines = 1000
    /// What the guest's blkfront is asked for (domu-init.sh, initramfs.sh): a queue per vCPU, 4 ring pages.
    static let queues = 2
    static let ringPageOrder = 2
    /// The guest's second console.
    static let secondConsole: UInt32 = 1

    static func run(_ report: Report) async {
        let domU = DomU()
        await report.check("domU: xl create -p (no disk, no vif, no xenconsoled)", limit: 150) {
            try await domU.create(report)
        }
        await report.check("domU: boots on our ConsoleDaemon and BlockBack (2 queues, 4-page ring)", limit: 300) {
            try await domU.boot(report)
        }
        await report.check("domU: 1000 lines (~64 KiB) through our console ring, in order, intact", limit: 180) {
            try await domU.bulk(report)
        }
        await report.check("domU: our console input reaches the guest; its disk writes land in our file", limit: 120) {
            try await domU.exchange(report)
        }
        await report.check("domU: a second console (device/console/1) on its own pty", limit: 120) {
            try await domU.secondConsole(report)
        }
        await report.check("domU: the toolstack detaches xvda and attaches it again while the guest runs", limit: 240) {
            try await domU.detachAndReattach(report)
        }
        await report.check(
            "domU: the guest reloads xen-blkfront (unbind, rmmod, insmod); it reconnects to our backend", limit: 300
        ) {
            try await domU.reload(report)
        }
        await report.check("domU: xl destroy; our BlockBack and ConsoleDaemon notice and let go", limit: 120) {
            try await domU.destroy(report)
        }
        await domU.cleanUp()
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
}

/// What the console daemon reported, filled by the task following its events.
final class ConsoleEvents: Sendable {
    let attached = Mutex<[ConsoleID: ConsoleBackSession]>([:])
    let detached = Mutex<[(ConsoleID, ConsoleError?)]>([])

    /// Waits up to `seconds` for `id` to be attached.
    func session(_ id: ConsoleID, within seconds: Int) async throws -> ConsoleBackSession {
        try await Poll.poll(seconds, "ConsoleDaemon to attach \(id)") { [self] in
            attached.withLock { $0[id] }
        }
    }
}

/// A flag one task raises and a reader thread polls.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var raised: Bool { flag.load(ordering: .acquiring) }
    func raise() { flag.store(true, ordering: .releasing) }
}

/// Polling helpers for the checks: a condition looked at every 100 ms, within a deadline.
enum Poll {
    /// Returns `probe`'s first non-nil answer, or fails after `seconds` naming `what`.
    static func poll<T: Sendable>(
        _ seconds: Int, _ what: String, _ probe: @escaping @Sendable () async throws -> T?
    ) async throws -> T {
        try await within(seconds, what) {
            while true {
                if let value = try await probe() { return value }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }
}

/// A pty read on a thread of its own into a transcript, until it hangs up or is stopped.
struct PtyReader: Sendable {
    let fd: Int32
    let transcript: ConsoleTranscript
    let stop = StopFlag()
    let task: Task<Void, Never>

    /// Opens `path` (a console's pty slave, as `xl console` does) and starts copying it.
    init(path: String, marker: String) throws {
        let fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC)
        try require(fd >= 0, errnoText("open \(path)"))
        let transcript = ConsoleTranscript(marker: marker)
        let stop = self.stop
        self.fd = fd
        self.transcript = transcript
        task = Task { await blocking { Self.copy(fd, into: transcript, stop: stop) } }
    }

    /// Types `text` into the console.
    func type(_ text: String) throws {
        let bytes = Array(text.utf8)
        let typed = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        try require(typed == bytes.count, errnoText("write to the pty"))
    }

    /// Stops the reader thread (it polls its flag every 200 ms) and only then closes the descriptor.
    func close() async {
        stop.raise()
        await task.value
        Glibc.close(fd)
    }

    private static func copy(_ fd: Int32, into transcript: ConsoleTranscript, stop: StopFlag) {
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
}
