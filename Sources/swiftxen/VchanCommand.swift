import ArgumentParser
import Foundation
import Vchan
import XenCore

#if canImport(Glibc)
    import Glibc
#endif

/// `swiftxen vchan`: a vchan between this domain and another, piped to stdin/stdout (like ocaml-vchan's
/// `xencat` or Xen's `vchan-socket-proxy ... -`).
struct VchanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vchan",
        abstract: "Inter-domain byte streams compatible with libxenvchan, piped to stdin/stdout; needs Xen.",
        subcommands: [VchanListen.self, VchanConnect.self]
    )
}

/// What both ends take.
struct VchanCommandOptions: ParsableArguments {
    @OptionGroup var connection: StoreConnectionOptions
    @Argument(help: "The peer's domain id.") var domid: UInt16
    @Argument(help: "The port name ([a-zA-Z0-9_-]+).") var port: String
    @Option(help: "Rendezvous directory in xenstore (default /local/domain/<server>/data/vchan/<client>/<port>).")
    var path: String?
    @Flag(help: "Close the vchan when stdin ends (default: stop sending, keep printing until the peer closes).")
    var closeOnEOF = false

    func options() -> VchanOptions { VchanOptions(xenstorePath: path) }

    /// Opens the real interfaces, runs `open`, relays stdin/stdout, closes.
    func run(_ open: @escaping (VchanEnvironment, VchanPort) async throws -> VchanConnection) async throws {
        let port = try VchanPort(self.port)
        try await connection.withClient { client in
            let vchan = try await open(try VchanEnvironment.xen(xenstore: client), port)
            FileHandle.standardError.write(Data("vchan \(vchan.role) \(vchan.xenstorePath): \(vchan.ringSizes)\n".utf8))
            do {
                _ = try await vchan.relay(input: STDIN_FILENO, output: STDOUT_FILENO, closeOnInputEnd: closeOnEOF)
            } catch {
                await vchan.close()
                throw error
            }
            await vchan.close()
        }
    }
}

/// `swiftxen vchan listen DOMID PORT`: the server end for client domain DOMID.
struct VchanListen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "listen", abstract: "Serve a vchan for domain DOMID under PORT and pipe it to stdin/stdout.")
    @OptionGroup var common: VchanCommandOptions
    @Option(help: "Minimum bytes of the ring the client writes (libxenvchan: 1024..1048576).") var readSize = 1024
    @Option(help: "Minimum bytes of the ring this side writes.") var writeSize = 2048

    func run() async throws {
        let (client, readSize, writeSize, options) = (DomainID(common.domid), readSize, writeSize, common.options())
        try await common.run { environment, port in
            try await VchanServer.listen(
                domain: client, port: port, readSize: readSize, writeSize: writeSize, environment: environment,
                options: options)
        }
    }
}

/// `swiftxen vchan connect DOMID PORT`: the client end of the vchan server domain DOMID published for us.
struct VchanConnect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "connect",
        abstract: "Connect to the vchan domain DOMID serves under PORT; pipe it to stdin/stdout.")
    @OptionGroup var common: VchanCommandOptions

    func run() async throws {
        let (server, options) = (DomainID(common.domid), common.options())
        try await common.run { environment, port in
            try await VchanClient.connect(domain: server, port: port, environment: environment, options: options)
        }
    }
}
