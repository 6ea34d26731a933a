import ArgumentParser
import BlockDevice
import Foundation
import NBDProtocol
import NBDServer

/// `swiftxen nbd serve FILE|--memory SIZE [--socket PATH | --port N]`: NBDServer in the foreground until
/// SIGINT/SIGTERM (nbdkit's `file` and `memory` plugins, qemu-nbd, ocaml-nbd's `nbd-tool serve`).
struct NBDServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Export a file or a memory disk over NBD until interrupted (nbdkit file|memory).",
        discussion: """
            Prints the export's URI once it listens. Without --socket or --port it listens on \
            127.0.0.1:10809. --tls-certificates DIR reads server-cert.pem, server-key.pem (and ca-cert.pem) \
            as nbdkit does; TLS is then required unless --tls on.
            """)

    @Argument(help: "The file or block device to export.") var file: String?
    @Option(help: "Export a memory disk of this size instead (e.g. 1G, 512M, 1048576).") var memory: String?
    @Option(help: "Listen on this unix socket.") var socket: String?
    @Option(help: "Listen on this TCP port.") var port: Int?
    @Option(help: "The address to listen on for TCP.") var address = "127.0.0.1"
    @Option(help: "The export name.") var export = ""
    @Option(help: "The export's description.") var description = ""
    @Flag(help: "Refuse writes.") var readOnly = false
    @Option(help: "A directory with server-cert.pem and server-key.pem (nbdkit's layout).")
    var tlsCertificates: String?
    @Option(help: "TLS mode with certificates: require (default) or on (at the client's choice).")
    var tls = "require"
    @Flag(help: "Require client certificates signed by the directory's ca-cert.pem.") var tlsVerifyPeer = false
    @Option(help: "Microseconds a connection keeps polling after traffic before it sleeps (0: always sleep).")
    var busyPoll = 100

    func validate() throws {
        guard (file == nil) != (memory == nil) else { throw ValidationError("give a FILE or --memory SIZE") }
        guard socket == nil || port == nil else { throw ValidationError("give --socket or --port, not both") }
        guard ["require", "on"].contains(tls) else { throw ValidationError("--tls is require or on") }
    }

    func run() async throws {
        let device: any BlockDevice
        if let memory {
            guard let bytes = Self.size(memory), bytes >= 512 else { throw ValidationError("bad size \(memory)") }
            device = MemoryBlockDevice(sizeSectors: bytes / 512)
        } else if let file {
            // 512-byte sectors unless the size is not a multiple of them: then byte-addressed, so the last
            // bytes of an odd-sized file are served too.
            var status = stat()
            let odd = stat(file, &status) == 0 && status.st_mode & S_IFMT == S_IFREG && status.st_size % 512 != 0
            device = try FileBlockDevice(path: file, sectorSize: odd ? 1 : 512, readOnly: readOnly)
        } else {
            throw ValidationError("give a FILE or --memory SIZE")
        }
        var options = NBDServerOptions()
        options.busyPollWindow = busyPoll > 0 ? .microseconds(busyPoll) : nil
        if let tlsCertificates {
            options.tls = NBDServerTLS(
                certificatesDirectory: tlsCertificates, verifyClients: tlsVerifyPeer,
                mode: tls == "on" ? .optional : .required)
        }
        let server = try await NBDServer(
            exports: [NBDServerExport(name: export, description: description, device: device, readOnly: readOnly)],
            options: options)
        let endpoint: NBDEndpoint = socket.map { .unix(path: $0) } ?? .tcp(host: address, port: port ?? 10809)
        let listener = try server.listen(on: endpoint)
        // Written straight to the descriptor: whoever waits for the URI must not wait for a buffer to fill.
        FileHandle.standardOutput.write(
            Data((Self.uri(listener.endpoint, export: export, tls: options.tls != nil) + "\n").utf8))
        let signal = await TerminationSignal.wait()
        await server.shutdown()
        FileHandle.standardError.write(Data("swiftxen nbd serve: stopped (\(signal))\n".utf8))
    }

    /// The URI clients use, as nbdkit prints it with `--print-uri`.
    static func uri(_ endpoint: NBDEndpoint, export: String, tls: Bool) -> String {
        let scheme = tls ? "nbds" : "nbd"
        let name = export.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? export
        switch endpoint {
        case .unix(let path): return "\(scheme)+unix:///\(name)?socket=\(path)"
        case .tcp(let host, let port):
            return "\(scheme)://\(host.contains(":") ? "[\(host)]" : host):\(port)/\(name)"
        }
    }

    /// Parses sizes as nbdkit does: a number with an optional K, M, G, T (powers of 1024) suffix.
    static func size(_ text: String) -> UInt64? {
        var digits = text.uppercased()
        if digits.hasSuffix("IB") { digits.removeLast(2) } else if digits.hasSuffix("B") { digits.removeLast() }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var scale: UInt64 = 1
        if let last = digits.last, let unit = units[last] {
            scale = unit
            digits.removeLast()
        }
        guard let value = UInt64(digits) else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: scale)
        return overflow ? nil : bytes
    }
}
