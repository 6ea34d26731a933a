import Foundation
import XenCore
import XenStoreClient
import XenStoreServer

/// How a test reaches the server: an in-process connection, or the server's unix socket.
enum Via: String, CaseIterable, CustomStringConvertible, Sendable {
    case inProcess
    case unixSocket

    var description: String { rawValue }
}

/// One `XenStoreServer` per test, reached in-process or over a unix socket in a temporary directory; every
/// client's transport is wrapped in a `CountingTransport` so tests can see what the client sent.
final class ServerRig: Sendable {
    let server = XenStoreServer()
    let via: Via
    let directory: URL
    let listener: XenStoreSocketListener?

    var socketPath: String { directory.appendingPathComponent("socket").path }

    init(_ via: Via) async throws {
        self.via = via
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "swiftxen-client-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        listener =
            via == .unixSocket
            ? try await server.listen(unixSocketPath: directory.appendingPathComponent("socket").path) : nil
    }

    /// A raw transport to the server (in-process ones speak as `domain`; socket ones are always dom0).
    func transport(domain: DomainID = .dom0) throws -> any XenStoreTransport {
        switch via {
        case .inProcess: return server.connect(domain: domain)
        case .unixSocket: return try UnixSocketTransport.connect(path: socketPath)
        }
    }

    /// A client and the counting wrapper around its transport.
    func client(
        domain: DomainID = .dom0, retryPolicy: XenStoreRetryPolicy = .default
    ) throws -> (XenStoreClient, CountingTransport) {
        let counting = CountingTransport(try transport(domain: domain))
        return (XenStoreClient(transport: counting, retryPolicy: retryPolicy), counting)
    }

    /// Stops the listener and removes the temporary directory.
    func shutDown() async {
        await listener?.close()
        try? FileManager.default.removeItem(at: directory)
    }
}
