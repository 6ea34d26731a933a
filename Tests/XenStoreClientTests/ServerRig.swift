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
    /// The unprivileged domain the socket rig also serves (on a socket of its own, as C xenstored serves a
    /// domain's connection).
    static let guestDomain: DomainID = 5

    let server = XenStoreServer()
    let via: Via
    let directory: URL
    let listeners: [XenStoreSocketListener]

    var socketPath: String { socketPath(for: .dom0) }

    func socketPath(for domain: DomainID) -> String {
        directory.appendingPathComponent(domain == .dom0 ? "socket" : "socket-dom\(domain.rawValue)").path
    }

    init(_ via: Via) async throws {
        self.via = via
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "swiftxen-client-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        if via == .unixSocket {
            let dom0 = directory.appendingPathComponent("socket").path
            let guest = directory.appendingPathComponent("socket-dom\(Self.guestDomain.rawValue)").path
            listeners = [
                try await server.listen(unixSocketPath: dom0),
                try await server.listen(unixSocketPath: guest, domain: Self.guestDomain),
            ]
        } else {
            listeners = []
        }
    }

    /// A raw transport to the server, speaking as `domain` (over a socket: dom0 or ``guestDomain``).
    func transport(domain: DomainID = .dom0) throws -> any XenStoreTransport {
        switch via {
        case .inProcess: return server.connect(domain: domain)
        case .unixSocket:
            precondition(domain == .dom0 || domain == Self.guestDomain, "the socket rig serves dom0 and dom5 only")
            return try UnixSocketTransport.connect(path: socketPath(for: domain))
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
        for listener in listeners { await listener.close() }
        try? FileManager.default.removeItem(at: directory)
    }
}
