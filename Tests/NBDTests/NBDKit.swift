import Foundation
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// A real nbdkit started for a test: on a unix socket in a temp dir or on 127.0.0.1 with a free port.
/// Always stopped by PID (`stop`, and in deinit should a test throw first).
final class NBDKit: @unchecked Sendable {
    private(set) var process: Process
    let directory: URL
    let socketPath: String?
    private(set) var port: Int?

    enum Listen { case unix, tcp }

    /// Starts `nbdkit <arguments>` and waits until it accepts connections.
    init(_ arguments: [String], listen: Listen = .unix, extra: [String] = []) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("nbdtest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var args = ["--foreground", "--exit-with-parent"] + extra
        if ProcessInfo.processInfo.environment["NBDKIT_VERBOSE"] != nil { args.append("-v") }
        process = Process()
        switch listen {
        case .unix:
            let path = directory.appendingPathComponent("nbd.sock").path
            socketPath = path
            port = nil
            try start(args + ["--unix", path] + arguments)
        case .tcp:
            socketPath = nil
            // A port found free can be taken by another test before nbdkit binds it ("Address already in
            // use", exit 1): try again on another port.
            for attempt in 1... {
                let free = NBDKit.freePort()
                port = free
                do {
                    try start(args + ["--ipaddr", "127.0.0.1", "--port", String(free)] + arguments)
                    break
                } catch NBDKitError.exited where attempt < 5 {
                    continue
                }
            }
        }
    }

    private func start(_ arguments: [String]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nbdkit")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        try waitUntilListening()
    }

    /// The URI of the default export.
    func uri(tls: Bool = false, query: String = "") -> String {
        let scheme = tls ? "nbds" : "nbd"
        if let socketPath { return "\(scheme)+unix:///?socket=\(socketPath)\(query.isEmpty ? "" : "&" + query)" }
        return "\(scheme)://127.0.0.1:\(port!)/\(query.isEmpty ? "" : "?" + query)"
    }

    func stop() {
        if process.isRunning {
            // SIGKILL: a child of the test runner may inherit a mask that blocks SIGTERM.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }

    private func waitUntilListening() throws {
        for _ in 0..<500 {
            guard process.isRunning else { throw NBDKitError.exited(process.terminationStatus) }
            if canConnect() { return }
            usleep(10_000)
        }
        stop()
        throw NBDKitError.notListening
    }

    private func canConnect() -> Bool {
        if let socketPath {
            guard let address = try? UnixSocketAddress(path: socketPath) else { return false }
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            return address.connect(fd) == 0
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port!).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// A port nobody listens on right now (bind to 0, read it back, close).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

enum NBDKitError: Error { case exited(Int32), notListening, tool(String, Int32) }

/// Runs a command line tool and returns its standard output; throws on a non-zero exit.
@discardableResult
func runTool(_ path: String, _ arguments: [String]) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw NBDKitError.tool("\(path) \(arguments.joined(separator: " "))", process.terminationStatus)
    }
    return data
}

/// Generates a CA and a server certificate for localhost / 127.0.0.1 with the openssl CLI, in nbdkit's
/// `--tls-certificates` layout (ca-cert.pem, server-cert.pem, server-key.pem). Also writes a second,
/// unrelated CA (other-ca.pem) for the negative test.
func makeCertificates(in directory: URL) throws {
    let dir = directory.path
    let openssl = "/usr/bin/openssl"
    try runTool(
        openssl,
        [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/ca-key.pem", "-out",
            "\(dir)/ca-cert.pem",
            "-days", "2", "-subj", "/CN=SwiftXen test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
    try runTool(
        openssl,
        [
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/server-key.pem", "-out", "\(dir)/server.csr",
            "-subj", "/CN=localhost",
        ])
    let ext = "\(dir)/ext.cnf"
    try "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n".write(
        toFile: ext, atomically: true, encoding: .utf8)
    try runTool(
        openssl,
        [
            "x509", "-req", "-in", "\(dir)/server.csr", "-CA", "\(dir)/ca-cert.pem", "-CAkey", "\(dir)/ca-key.pem",
            "-CAcreateserial", "-out", "\(dir)/server-cert.pem", "-days", "2", "-extfile", ext,
        ])
    try runTool(
        openssl,
        [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/other-key.pem", "-out",
            "\(dir)/other-ca.pem",
            "-days", "2", "-subj", "/CN=Unrelated CA",
        ])
}
