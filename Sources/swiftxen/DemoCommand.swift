import ArgumentParser
import Foundation
import XenCore
import XenStoreServer

/// `swiftxen demo`: runs the stack end to end and prints what happens. The demo is a sequence of sections,
/// each a function; later components append theirs to `sections`.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Show the stack working: xenstore through the stock tools (more sections as components land)."
    )

    /// One part of the demo.
    struct Section: Sendable {
        var title: String
        var run: @Sendable () async throws -> Void
    }

    /// The demo's parts, in order. Append a section per component.
    static let sections: [Section] = [
        Section(title: "xenstore: the in-memory xenstored driven by the stock xenstore-* tools", run: xenstoreSection),
        Section(
            title: "block: BlockFront <-> BlockBack serving a disk image on the simulated hypervisor", run: blockSection
        ),
        Section(
            title: "network: NetFront <-> NetBack between two simulated domains (ping-like, 16 MiB each way)",
            run: netSection),
        Section(title: "console: a simulated guest prints through its PV console onto a pty", run: consoleSection),
    ]

    func run() async throws {
        for (index, section) in Self.sections.enumerated() {
            print("\n== \(index + 1). \(section.title) ==")
            try await section.run()
        }
        print("\nswiftxen demo: all sections passed")
    }
}

// MARK: - xenstore section

extension DemoCommand {
    /// Starts `XenStoreServer` on a temporary socket and drives it with xenstore-write/read/ls/chmod/watch.
    @Sendable static func xenstoreSection() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "swiftxen-demo-\(ProcessInfo.processInfo.processIdentifier)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("socket").path

        let server = XenStoreServer()
        let listener = try await server.listen(unixSocketPath: socket)
        print("server: listening on \(socket)")
        print("        (every command below runs with XENSTORED_PATH=\(socket))")
        do {
            try await driveWithStockTools(server, socket: socket)
        } catch {
            await listener.close()
            throw error
        }
        await listener.close()
    }

    /// The tool interaction proper.
    static func driveWithStockTools(_ server: XenStoreServer, socket: String) async throws {
        let tools = StockTools(socket: socket)
        try tools.show("xenstore-write", "/local/domain/1/name", "guest1", "/local/domain/1/memory/target", "524288")
        try tools.show("xenstore-read", "/local/domain/1/name")
        try tools.show("xenstore-ls", "/local/domain/1")
        print("# permissions: owner first; n1 = owned by domain 1, no access for others; r0 = dom0 may read")
        try tools.show("xenstore-chmod", "/local/domain/1", "n1", "r0")
        try tools.show("xenstore-ls", "-p", "/local/domain")

        // A watch: xenstore-watch prints the registration event first, then the change.
        print("$ xenstore-watch -n 2 /local/domain/1/device &")
        let watcher = try tools.start("xenstore-watch", "-n", "2", "/local/domain/1/device")
        let first = try watcher.readLine()
        print("  [watch] \(first)")
        try tools.show("xenstore-write", "/local/domain/1/device/vbd/51712/state", "1")
        let second = try watcher.readLine()
        print("  [watch] \(second)")
        let status = watcher.wait()
        guard first == "/local/domain/1/device", second.hasPrefix("/local/domain/1/device/vbd/51712"), status == 0
        else { throw DemoError.unexpected("xenstore-watch printed \(first) / \(second), exit \(status)") }

        try tools.show("xenstore-read", "/local/domain/1/no-such-key", expectFailure: true)
        print("server: \(server.nodeCount) nodes, consistency check: \(server.check().isEmpty ? "OK" : "FAILED")")
    }
}

enum DemoError: Error, CustomStringConvertible {
    case unexpected(String)
    var description: String {
        switch self {
        case .unexpected(let text): text
        }
    }
}

/// Runs the Debian xenstore-utils tools against a socket.
struct StockTools {
    let socket: String

    func process(_ tool: String, _ arguments: [String]) -> (Process, Pipe, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/\(tool)")
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["XENSTORED_PATH"] = socket
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        return (process, output, errors)
    }

    /// Runs a tool to completion, prints the command line and its output; throws on an unexpected status.
    func show(_ tool: String, _ arguments: String..., expectFailure: Bool = false) throws {
        print("$ \(([tool] + arguments).joined(separator: " "))")
        let (process, output, errors) = process(tool, arguments)
        try process.run()
        let out = output.fileHandleForReading.readDataToEndOfFile()
        let err = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        for line in String(decoding: out + err, as: UTF8.self).split(separator: "\n") { print("  \(line)") }
        let failed = process.terminationStatus != 0
        if failed { print("  (exit status \(process.terminationStatus))") }
        guard failed == expectFailure else {
            throw DemoError.unexpected("\(tool) exited with \(process.terminationStatus)")
        }
    }

    /// Starts a long-running tool (xenstore-watch).
    func start(_ tool: String, _ arguments: String...) throws -> RunningTool {
        let (process, output, _) = process(tool, arguments)
        try process.run()
        return RunningTool(process: process, output: output.fileHandleForReading)
    }
}

/// A started tool whose output is read line by line.
final class RunningTool {
    let process: Process
    let output: FileHandle
    private var buffer: [UInt8] = []

    init(process: Process, output: FileHandle) {
        self.process = process
        self.output = output
    }

    /// The next line of output (blocking).
    func readLine() throws -> String {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            let data = output.availableData
            guard !data.isEmpty else { throw DemoError.unexpected("tool output ended early") }
            buffer.append(contentsOf: data)
        }
    }

    func wait() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }
}
