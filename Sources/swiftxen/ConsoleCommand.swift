import ArgumentParser
import ConsoleBackend
import EventChannel
import Foundation
import GrantTable
import XenCore
import XenStoreClient

#if canImport(Glibc)
    import Glibc
#endif

/// `swiftxen console`: attach to a guest console (like `xl console`) or serve consoles (like xenconsoled).
struct ConsoleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Xen PV consoles: attach to one, or serve every guest's consoles.",
        subcommands: [ConsoleAttach.self, ConsoleServe.self]
    )
}

/// `swiftxen console attach DOMID [--devid N]`: opens the pty published in the console's `tty` key and
/// relays the terminal to it until Ctrl-] (as `xl console`).
struct ConsoleAttach: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach", abstract: "Attach the terminal to a guest console (Ctrl-] detaches).")
    @OptionGroup var connection: StoreConnectionOptions
    @Argument(help: "The guest's domain id.") var domid: UInt16
    @Option(help: "Extra console device id (default: the primary console).") var devid: UInt32?

    func run() async throws {
        let id = ConsoleID(domain: DomainID(domid), device: devid.map { .extra($0) } ?? .primary)
        let key = "\(id.frontendPath)/\(ConsoleKeys.tty)"
        let tty = try await connection.withClient { client in
            try await client.immediate { handle in try await handle.read(key) }
        }
        guard !tty.isEmpty else { throw ValidationError("\(key) is empty: no daemon serves this console yet") }
        let fd = open(tty, O_RDWR | O_NOCTTY)
        guard fd >= 0 else { throw ValidationError("cannot open \(tty): errno \(errno)") }
        FileHandle.standardError.write(Data("Connected to \(id) on \(tty). Escape character is '^]'.\n".utf8))
        // The relay blocks in poll(2) until the user leaves: a call that may block without bound, on the
        // blocking pool, never on the cooperative pool.
        await BlockingPool.shared.run(mayBlockIndefinitely: true) { TerminalRelay(pty: fd).run() }
        close(fd)
    }
}

/// Copies stdin → pty and pty → stdout with the local terminal in raw mode; Ctrl-] or EOF ends it.
struct TerminalRelay {
    let pty: Int32
    static let escape: UInt8 = 0x1D

    func run() {
        var saved = termios()
        let interactive = isatty(STDIN_FILENO) == 1 && tcgetattr(STDIN_FILENO, &saved) == 0
        if interactive {
            var raw = saved
            cfmakeraw(&raw)
            tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        }
        defer { if interactive { tcsetattr(STDIN_FILENO, TCSANOW, &saved) } }
        var fds = [
            pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0),
            pollfd(fd: pty, events: Int16(POLLIN), revents: 0),
        ]
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            guard poll(&fds, 2, -1) >= 0 else {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 {
                let count = read(pty, &buffer, buffer.count)
                guard count > 0 else { return }
                guard writeAllBytes(STDOUT_FILENO, buffer, count) else { return }
            }
            if fds[0].revents != 0 {
                let count = read(STDIN_FILENO, &buffer, buffer.count)
                guard count > 0 else { return }
                if let stop = buffer[..<count].firstIndex(of: Self.escape) {
                    _ = writeAllBytes(pty, buffer, stop)
                    return
                }
                guard writeAllBytes(pty, buffer, count) else { return }
            }
        }
    }

    private func writeAllBytes(_ fd: Int32, _ bytes: [UInt8], _ count: Int) -> Bool {
        var offset = 0
        while offset < count {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, count - offset) }
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }
}

/// `swiftxen console serve`: the xenconsoled role on a real Xen host: follows every guest and serves each
/// console on a pty (path written to `tty`), or appends to log files with `--log-dir`.
struct ConsoleServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve every guest's consoles (like xenconsoled); needs Xen.")
    @OptionGroup var connection: StoreConnectionOptions
    @Option(help: "Write each console to <dir>/guest-<domid>[-<devid>].log instead of a pty.") var logDir: String?

    func run() async throws {
        let grants = try XenGrantTable()
        let events = try XenEventChannel()
        let logDir = self.logDir
        try await connection.withClient { client in
            let daemon = ConsoleDaemon(xenstore: client, grantTable: grants, eventChannel: events) {
                id throws(ConsoleError) -> (any ConsoleSink)? in
                if let logDir {
                    let suffix = if case .extra(let devid) = id.device { "-\(devid)" } else { "" }
                    return LogFileConsoleSink(path: "\(logDir)/guest-\(id.domain.rawValue)\(suffix).log")
                }
                return try PtyConsoleSink()
            }
            Task {
                for await event in daemon.events {
                    switch event {
                    case .attached(let session): print("attached \(session.id)")
                    case .detached(let id, let reason): print("detached \(id)\(reason.map { ": \($0)" } ?? "")")
                    }
                }
            }
            try await daemon.run()
        }
    }
}
