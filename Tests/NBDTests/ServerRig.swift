import BlockDevice
import Foundation
import NBDProtocol
import NBDServer
import Synchronization
import XenCore

/// An NBDServer started for a test on a unix socket in a temp dir (and, when asked, on 127.0.0.1 with a
/// port the kernel picks). `stop()` shuts it down and removes the directory.
final class ServerRig: @unchecked Sendable {
    let server: NBDServer
    let directory: URL
    let socketPath: String
    private(set) var port: Int?

    init(_ exports: [NBDServerExport], options: NBDServerOptions = NBDServerOptions(), tcp: Bool = false) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbdserver-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        socketPath = directory.appendingPathComponent("nbd.sock").path
        server = try await NBDServer(exports: exports, options: options)
        _ = try server.listen(on: .unix(path: socketPath))
        if tcp, case .tcp(_, let bound) = try server.listen(on: .tcp(host: "127.0.0.1", port: 0)).endpoint {
            port = bound
        }
    }

    /// A memory export of `size` bytes.
    static func memory(_ size: UInt64, name: String = "", sectorSize: Int = 512, readOnly: Bool = false)
        -> NBDServerExport
    {
        NBDServerExport(
            name: name, device: MemoryBlockDevice(sizeSectors: size / UInt64(sectorSize), sectorSize: sectorSize),
            readOnly: readOnly)
    }

    /// The URI of `export` on the unix socket (or on TCP with `tcp`).
    func uri(_ export: String = "", tcp: Bool = false, tls: Bool = false, query: String = "") -> String {
        let scheme = tls ? "nbds" : "nbd"
        if tcp, let port { return "\(scheme)://127.0.0.1:\(port)/\(export)\(query.isEmpty ? "" : "?" + query)" }
        return "\(scheme)+unix:///\(export)?socket=\(socketPath)\(query.isEmpty ? "" : "&" + query)"
    }

    /// Waits (up to 5 s) until the server has no connection left.
    func waitIdle() async -> Bool {
        for _ in 0..<500 {
            if server.connectionCount == 0 { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    func stop() async {
        await server.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A device whose flushes wait until the test opens the gate: lets a test hold one request in flight
/// while others complete (out-of-order replies).
actor GatedFlushDevice: BlockDevice {
    let base: MemoryBlockDevice
    private var open = false
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private(set) var flushesStarted = 0

    init(sizeSectors: UInt64) { base = MemoryBlockDevice(sizeSectors: sizeSectors) }

    func info() async -> BlockDeviceInfo { await base.info() }
    func read(at sector: UInt64, into buffers: [PageBuffer]) async throws(BlockError) {
        try await base.read(at: sector, into: buffers)
    }
    func write(at sector: UInt64, from buffers: [PageBuffer]) async throws(BlockError) {
        try await base.write(at: sector, from: buffers)
    }
    func flush() async throws(BlockError) {
        flushesStarted += 1
        if !open { await withCheckedContinuation { waiting.append($0) } }
    }
    func release() {
        open = true
        for waiter in waiting { waiter.resume() }
        waiting = []
    }
    func disconnect() async { await base.disconnect() }
}

/// What a command line tool printed and how it exited.
struct ToolResult: Sendable {
    var status: Int32
    var output: String
    var errors: String
}

/// Runs a tool to completion on a thread of its own (never blocking the cooperative pool, which serves
/// the server under test too), with an optional standard input.
func tool(_ path: String, _ arguments: [String], input: Data? = nil) async throws -> ToolResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    let stdin = Pipe()
    process.standardInput = input == nil ? FileHandle.nullDevice : stdin
    try process.run()
    return await withCheckedContinuation { continuation in
        let started = DetachedThread.spawn {
            if let input {
                // A tool may stop reading early (and exit): a broken pipe, not a crash of the test process.
                try? stdin.fileHandleForWriting.write(contentsOf: input)
                try? stdin.fileHandleForWriting.close()
            }
            // Drain stderr on its own so a chatty tool never blocks on a full pipe.
            let errorData = Mutex(Data())
            let drained = DispatchSemaphore(value: 0)
            _ = DetachedThread.spawn {
                let data = errors.fileHandleForReading.readDataToEndOfFile()
                errorData.withLock { $0 = data }
                drained.signal()
            }
            let data = output.fileHandleForReading.readDataToEndOfFile()
            drained.wait()
            process.waitUntilExit()
            continuation.resume(
                returning: ToolResult(
                    status: process.terminationStatus, output: String(decoding: data, as: UTF8.self),
                    errors: String(decoding: errorData.withLock { $0 }, as: UTF8.self)))
        }
        if started != 0 {
            process.terminate()
            continuation.resume(returning: ToolResult(status: -1, output: "", errors: "no thread"))
        }
    }
}

/// A fresh directory under the temporary directory; the caller removes it.
func makeTemporaryDirectory(_ prefix: String) throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    return directory
}
